--[[
  Scheduled -> queued for one slice of a campaign's jobs (campaign:{cid}:jobs[start..stop]).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] now  [4] start  [5] stop (LRANGE indexes)
  Returns how many jobs of the slice were moved.
]]
--!include prelude
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
