--[[
  Arm a draft: its staged jobs become due at its send_at (now when none or past), through the
  scheduled path (due_campaigns, campaign_activate_*.lua).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] now  [4] require_test_above (0 = never)  [5] '1' when the caller
        is an admin (a draft whose creating key was revoked, owner_revoked, needs one)
  Returns 'now' (the caller activates it at once) or 'later' (the dispatcher does at send_at), or
  '!' .. status when it is not a draft, '!test' when a test send that went out is required first (more
  than require_test_above recipients and none sent), '!owner_revoked' when it needs an admin.
]]
--!include prelude
local cid, now, above = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ck = key_campaign(cid)
local st, total, tests_sent, send_at, revoked =
  unpack(redis.call('HMGET', ck, 'status', 'total', 'tests_sent', 'send_at', 'owner_revoked'))
if not st then return '!missing' end
if st ~= CAMPAIGN.DRAFT then return '!' .. st end
if revoked == '1' and ARGV[5] ~= '1' then return '!owner_revoked' end
if above > 0 and tonumber(total or '0') > above and tonumber(tests_sent or '0') == 0 then return '!test' end
local at = tonumber(send_at or '') or now
if at < now then at = now end
redis.call('HSET', ck, 'status', CAMPAIGN.SCHEDULED, 'started', ARGV[3], 'updated', ARGV[3])
redis.call('HDEL', ck, 'owner_revoked')
redis.call('ZADD', key_due_campaigns(), at, cid)
wake()
if at > now then return 'later' end
return 'now'
