--[[
  Take the account's lease for one step of its contact sync (one vendor call), like a send session: only
  when no session holds it and no dead one awaits recovery, and only while the account is active. A
  session in flight is flagged, so it ends at its next job and the sync's step gets the account between
  two sends. On success the sync's due score moves to `watchdog_at` (one lease TTL ahead): if the worker
  dies, the step is looked at again once the lease has expired, and resumes from the cursor.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] ttl_ms  [5] watchdog_at
  Returns 1 (taken), 0 (busy), or a reason the sync waits/stops: 'paused', 'down' (the account's status),
  'gone' (no running sync: it leaves the due set).
]]
--!include prelude
local a, token = ARGV[2], ARGV[3]
local sk = key_contact_sync(a)
if redis.call('HGET', sk, 'status') ~= 'running' then
  redis.call('ZREM', key_contact_sync_due(), a)
  -- a step that died holding the lease kept the account out of `sched`: give it back
  if redis.call('LLEN', key_queue_high(a)) > 0 or redis.call('ZCARD', key_sources(a)) > 0 then
    redis.call('ZADD', key_sched(), 'NX', 0, a)
  end
  return 'gone'
end
local status = redis.call('HGET', key_account(a), 'status')
if status == 'paused' or status == 'down' then return status end
if redis.call('SISMEMBER', key_leased(), a) == 1 or redis.call('EXISTS', key_lease(a)) == 1 then
  local cur = redis.call('GET', key_lease(a))
  if cur and string.sub(cur, 1, 6) ~= 'probe:' then flag_lease(a) end
  return 0
end
redis.call('SET', key_lease(a), token, 'PX', tonumber(ARGV[4]))
redis.call('ZADD', key_contact_sync_due(), tonumber(ARGV[5]), a)
return 1
