--[[
  Make a scheduled campaign's staged jobs dispatchable (after its campaign_activate_chunk calls).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] now  [4..] its accounts
  Returns 1, or 0 when the campaign is no longer `scheduled`.
]]
--!include prelude
local cid, now = ARGV[2], ARGV[3]
local ck = key_campaign(cid)
local status = redis.call('HGET', ck, 'status')
if status ~= CAMPAIGN.SCHEDULED then
  -- paused (resume puts it back) or cancelled: not due any more
  redis.call('ZREM', key_due_campaigns(), cid)
  return 0
end
for i = 4, #ARGV do go_live(cid, ARGV[i]) end
redis.call('HSET', ck, 'status', CAMPAIGN.ACTIVE, 'activated', now)
redis.call('ZREM', key_due_campaigns(), cid)
wake()
return 1
