--!include prelude
-- ARGV: prefix, cid, idem_key|'', idem_ttl_s, now, status (active|scheduled|draft), send_at|'', total, accounts...
-- A draft keeps its jobs staged (scheduled, in cst: lists) until campaign_start.lua arms it.
local cid, idem, now, status, send_at, total = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local existing = claim_idempotency('c', idem, cid, ARGV[4])
if existing then return {0, existing} end
local ck = key_campaign(cid)
local counter = 'n:' .. STATE.QUEUED
if status ~= CAMPAIGN.ACTIVE then counter = 'n:' .. STATE.SCHEDULED end
redis.call('HSET', ck, 'status', status, counter, total, 'committed', now)
redis.call('ZADD', key_campaigns(), now, cid)
if status == CAMPAIGN.ACTIVE then
  for i = 9, #ARGV do go_live(cid, ARGV[i]) end
  wake()
elseif status == CAMPAIGN.SCHEDULED then
  redis.call('ZADD', key_due_campaigns(), send_at, cid)
end
return {1, cid}
