--!include prelude
-- ARGV: prefix, cid, now, start, stop. Cancels the unsent jobs of one slice of a cancelled campaign.
local cid, now = ARGV[2], ARGV[3]
local n = 0
for _, id in ipairs(redis.call('LRANGE', key_campaign_jobs(cid), ARGV[4], ARGV[5])) do
  local jk = key_job(id)
  local st = redis.call('HGET', jk, 'state')
  if st == STATE.QUEUED or st == STATE.SCHEDULED or st == STATE.RETRYING then
    move(jk, st, STATE.CANCELLED)
    retain(id)
    redis.call('HSET', jk, 'cancelled_at', now)
    redis.call('ZREM', key_due(), id)
    n = n + 1
  end
end
return n
