--[[
  End a contact sync step: free the lease, give the account back to the dispatcher when it has jobs
  waiting (their pacing is decided there, as after any session), and schedule the sync's next step at
  `next_at` (its own gap) while the sync still runs.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] next_at ('' when the sync has no further step)
  Returns 1, or 0 when the lease was no longer the step's (it expired meanwhile).
]]
--!include prelude
local a, token, next_at = ARGV[2], ARGV[3], ARGV[4]
local lk = key_lease(a)
local held = holds_lease(redis.call('GET', lk), token)
if held then redis.call('DEL', lk) end
if redis.call('LLEN', key_queue_high(a)) > 0 or redis.call('ZCARD', key_sources(a)) > 0 then
  redis.call('ZADD', key_sched(), 'NX', 0, a)
end
if next_at ~= '' and redis.call('HGET', key_contact_sync(a), 'status') == 'running' then
  redis.call('ZADD', key_contact_sync_due(), tonumber(next_at), a)
else
  redis.call('ZREM', key_contact_sync_due(), a)
end
wake()
if held then return 1 end
return 0
