--[[
  Commit a campaign whose jobs are written: its status, counts and, when active, its sources go live.
  A draft keeps its jobs staged (scheduled, in cst: lists) until campaign_start.lua arms it.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] idempotency key ('' = none)  [4] its ttl, seconds  [5] now
        [6] status (a CampaignStatus: active, scheduled or draft)  [7] send_at ('' = none)
        [8] total jobs  [9] the operator key that created it ('' = none or the bootstrap token)  [10] that
        key's SHA-256  [11..] its accounts
  A campaign whose key was revoked while it was being written (opkey:{name} gone, or holding another
  key's digest: a new key of the same name) is committed paused and flagged owner_revoked (a draft
  flagged): what the revocation paused, it pauses too.
  Returns {1, campaign id, its status}, or {0, the campaign id the idempotency key already stands for}.
]]
--!include prelude
local cid, idem, now, status, send_at, total = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local owner, owner_digest = ARGV[9], ARGV[10]
local existing = claim_idempotency('c', idem, cid, ARGV[4])
if existing then return {0, existing} end
local ck = key_campaign(cid)
local counter = 'n:' .. STATE.QUEUED
if status ~= CAMPAIGN.ACTIVE then counter = 'n:' .. STATE.SCHEDULED end
redis.call('HSET', ck, 'status', status, counter, total, 'committed', now)
redis.call('ZADD', key_campaigns(), now, cid)
if status == CAMPAIGN.ACTIVE then
  for i = 11, #ARGV do go_live(cid, ARGV[i]) end
elseif status == CAMPAIGN.SCHEDULED then
  redis.call('ZADD', key_due_campaigns(), send_at, cid)
end
if owner_gone(owner, owner_digest) then
  flag_owner_revoked(cid, status, now, {unpack(ARGV, 11)})
  if status ~= CAMPAIGN.DRAFT then status = CAMPAIGN.PAUSED end
end
if status == CAMPAIGN.ACTIVE then wake() end
return {1, cid, status}
