--[[
  Replay a dead job: dead -> queued, same id.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] job id  [3] now  [4] force ('1' allows replaying an unknown outcome)
        [5] the replaying key's name  [6] its SHA-256 ('' = a BROADCAST_API_TOKEN)  [7] '1' when it is an admin
  Returns {'ok'}, or why not: {'missing'}, {'not_dead', state}, {'revoke'}, {'deleted'},
  {'unknown_outcome'} (without force), {'campaign_recalled'}, {'campaign_cancelled'}, {'already_sent'},
  {'owner_revoked'}: a single message whose key was revoked (or is another key of its name now) is an
  admin's to replay, as a campaign of such a key is an admin's to resume; the admin's replay makes it the
  admin's (created_by, owner_key), so BEGIN sends it instead of cancelling it.
]]
--!include prelude
local id, now, force = ARGV[2], ARGV[3], ARGV[4]
local jk = key_job(id)
local st, reason, account, priority, camp =
  unpack(redis.call('HMGET', jk, 'state', 'reason', 'account', 'priority', 'campaign'))
if not st then return {'missing'} end
if st ~= STATE.DEAD then return {'not_dead', st} end
-- a revoke is asked for once and never repeated (its outcome is on the message it revoked)
if redis.call('HEXISTS', jk, 'target') == 1 then return {'revoke'} end
if redis.call('HGET', jk, 'dismissed') == '1' then return {'deleted'} end
if reason == DEAD_REASON.UNKNOWN_OUTCOME and force ~= '1' then return {DEAD_REASON.UNKNOWN_OUTCOME} end
if camp and camp ~= '' then
  local cstatus, recalled = unpack(redis.call('HMGET', key_campaign(camp), 'status', 'recall_requested_at'))
  -- a recalled campaign was taken back: nothing of it goes out again, even one that had finished
  if recalled then return {'campaign_recalled'} end
  if cstatus == CAMPAIGN.CANCELLED then return {'campaign_cancelled'} end
end
if redis.call('HEXISTS', jk, 'new_msg_id') == 1 or redis.call('HEXISTS', jk, 'sent_at') == 1 then
  return {'already_sent'}
end
local owner, owner_key = unpack(redis.call('HMGET', jk, 'created_by', 'owner_key'))
if message_owner_gone(camp, owner, owner_key) then
  if ARGV[7] ~= '1' then return {CANCEL_REASON.OWNER_REVOKED} end
  redis.call('HSET', jk, 'created_by', ARGV[5], 'owner_key', ARGV[6])
end
redis.call('ZREM', key_dlq(), id)
redis.call('PERSIST', jk)
redis.call('PERSIST', key_history(id))
move(jk, STATE.DEAD, STATE.QUEUED)
redis.call('HDEL', jk, 'reason', 'error_class', 'error', 'dead_at', 'n_transient', 'n_throttled', 'n_failure',
  'n_ambiguous')
redis.call('HINCRBY', jk, 'replays', 1)
redis.call('HSET', jk, 'updated', now)
local entry = cjson.encode({event = 'replayed', at = tonumber(now), from_reason = reason})
redis.call('RPUSH', key_history(id), entry)
enqueue(account, id, priority, false, camp)
wake()
return {'ok'}
