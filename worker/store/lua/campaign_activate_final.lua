--!include prelude
-- ARGV: prefix, cid, now, accounts... Makes a scheduled campaign's staged jobs dispatchable.
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
