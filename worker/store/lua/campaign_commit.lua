--!include prelude
-- ARGV: prefix, cid, idem_key|'', idem_ttl_s, now, status (active|scheduled), send_at|'', total, accounts...
local cid, idem, now, status, send_at, total = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local existing = claim_idempotency('c', idem, cid, ARGV[4])
if existing then return {0, existing} end
local ck = key_campaign(cid)
local counter = 'n:queued'
if status == 'scheduled' then counter = 'n:scheduled' end
redis.call('HSET', ck, 'status', status, counter, total, 'committed', now)
redis.call('ZADD', key_campaigns(), now, cid)
if status == 'active' then
  for i = 9, #ARGV do go_live(cid, ARGV[i]) end
  wake()
else
  redis.call('ZADD', key_due_campaigns(), send_at, cid)
end
return {1, cid}
