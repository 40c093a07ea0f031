--[[
  Cancel a job that has not started sending (queued, scheduled or retrying).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] job id  [3] now
  Returns the previous state ('' when there is no such job), or 'revoke' for a revoke job: a recall is
  final (its message would wait as 'pending' for ever).
]]
--!include prelude
local id, now = ARGV[2], ARGV[3]
local jk = key_job(id)
local st, op = unpack(redis.call('HMGET', jk, 'state', 'op'))
if op == 'revoke' then return 'revoke' end
if st == STATE.QUEUED or st == STATE.SCHEDULED or st == STATE.RETRYING then
  move(jk, st, STATE.CANCELLED)
  retain(id)
  redis.call('HSET', jk, 'updated', now, 'cancelled_at', now)
  redis.call('ZREM', key_due(), id)
end
return st or ''
