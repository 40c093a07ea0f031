--[[
  Cancel the unsent (queued, scheduled, retrying) jobs of one slice of a cancelled campaign.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] now  [4] start  [5] stop (LRANGE indexes)
  Returns how many jobs of the slice were cancelled.
]]
--!include prelude
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
