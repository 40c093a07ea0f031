--[[
  Pause, resume or cancel a campaign (its jobs are cancelled by campaign_cancel_chunk.lua), or flag it
  owner_revoked: the key that created it was revoked, so it is paused (a draft or paused one only flagged)
  and only an admin resumes or starts it (resume_admin).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] campaign id  [3] action (pause|resume|resume_admin|cancel|owner_revoked)  [4] now
        [5..] its accounts (their sessions are flagged, or scheduled again on resume)
  Returns the previous status, or '!' .. status when the action does not apply ('!owner_revoked': a
  resume that needs an admin).
]]
--!include prelude
local cid, action, now = ARGV[2], ARGV[3], ARGV[4]
local ck = key_campaign(cid)
local st, revoked = unpack(redis.call('HMGET', ck, 'status', 'owner_revoked'))
if not st then return '!missing' end
if action == 'resume' and revoked == '1' then return '!owner_revoked' end
if action == 'resume_admin' then action = 'resume' end
if action == 'pause' then
  if st ~= CAMPAIGN.ACTIVE and st ~= CAMPAIGN.SCHEDULED then return '!' .. st end
  pause_campaign(cid, st, '', now, {unpack(ARGV, 5)})
elseif action == 'resume' then
  if st ~= CAMPAIGN.PAUSED then return '!' .. st end
  local back = redis.call('HGET', ck, 'paused_from') or CAMPAIGN.ACTIVE
  redis.call('HSET', ck, 'status', back, 'updated', now)
  -- a fresh start for auto-pause: the window of outcomes, the run of failures and the reason go
  redis.call('HDEL', ck, 'pause_reason', 'ap_fails', 'ap_streak_n', 'owner_revoked')
  redis.call('DEL', key_campaign_outcomes(cid))
  if back == CAMPAIGN.SCHEDULED then
    redis.call('ZADD', key_due_campaigns(), tonumber(redis.call('HGET', ck, 'send_at') or now) or now, cid)
  end
  for i = 5, #ARGV do schedule(ARGV[i]) end
  wake()
elseif action == 'owner_revoked' then
  if st == CAMPAIGN.CANCELLED then return '!' .. st end
  flag_owner_revoked(cid, st, now, {unpack(ARGV, 5)})
elseif action == 'cancel' then
  if st == CAMPAIGN.CANCELLED then return '!' .. st end
  redis.call('HSET', ck, 'status', CAMPAIGN.CANCELLED, 'cancelled_at', now, 'updated', now)
  redis.call('ZREM', key_due_campaigns(), cid)
  for i = 5, #ARGV do flag_lease(ARGV[i]) end
end
return st
