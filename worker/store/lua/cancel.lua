--!include prelude
-- ARGV: prefix, job_id, now. Cancels a job that has not started sending. Returns the previous state, or
-- 'revoke' for a revoke job: a recall is final (its message would wait as 'pending' for ever).
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
