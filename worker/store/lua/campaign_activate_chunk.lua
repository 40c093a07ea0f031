--!include prelude
-- ARGV: prefix, cid, now, start, stop. Scheduled -> queued for one slice of a campaign's jobs.
local cid, now = ARGV[2], ARGV[3]
local n = 0
for _, id in ipairs(redis.call('LRANGE', key_campaign_jobs(cid), ARGV[4], ARGV[5])) do
  local jk = key_job(id)
  if redis.call('HGET', jk, 'state') == STATE.SCHEDULED then
    move(jk, STATE.SCHEDULED, STATE.QUEUED)
    n = n + 1
  end
end
return n
