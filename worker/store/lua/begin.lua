--[[
  BEGIN: mark one job `sending` just before its vendor call, if the session still holds the account's
  lease, unflagged, and Redis TIME has reached `not_before` (the start the worker's pacing chose).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token (the session's lease)  [4] job id  [5] now
        [6] lease_ttl_ms (the lease is renewed)  [7] not_before (0 = the dispatcher's start)
        [8] known campaigns (comma-separated: their template is not sent back)
        [9] recipient cap: max campaign sends, or '@': the account's own, read from its limits (a session's
        first BEGIN, sent before the worker has read the account)  [10] its window, seconds (0 = none)
        [11] call (this BEGIN's id, '' = none: FINISH's replay fence)
  Returns {'go', template, redis_now ('' when not_before is 0), job} (BEGIN.GO) — `template` the
  campaign's message, or '=' when the caller named the campaign as known; `job` the job hash, flat — or
  {'early', seconds to wait}, or {'lost'|'yield'|'skip', why} ('yield': the lease is flagged, see
  flag_lease: end the session). Python: worker.store.vocabulary.BeginStatus.
  Recipient hygiene (issue 19), checked here so it costs no extra round trip: a suppressed recipient
  (supp:{account} or supp:*, unless the job says nosupp) ends `skipped`/suppressed; a campaign job whose
  recipient already had cap_max campaign sends from the account in the window ends `skipped`/frequency_cap,
  or waits (`scheduled`) until the window allows when its campaign says on_cap = wait. A job that passes
  holds its place in rcap: at once, so two campaigns racing cannot both pass (finish_retry/_dead/_requeue
  give it back when nothing was sent).
  A single message (or test send) whose operator key was revoked since it was submitted (`owner_key` no
  longer the digest in opkey:{created_by}) ends `cancelled`, `reason` owner_revoked ({'skip',
  'owner_revoked'}): the revocation cancels what waits, and this catches one that was being sent then and
  is tried again (a retry, a requeue, a recovered lease). A campaign's jobs go by their campaign (paused on
  revocation; an admin may resume it).
]]
--!include prelude
local a, token, id, now, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local not_before, known = tonumber(ARGV[7]), ARGV[8]
local cap_max, cap_window = tonumber(ARGV[9] or '0') or 0, tonumber(ARGV[10] or '0') or 0
if ARGV[9] == '@' then
  -- the limits as worker.store.accounts.Limits writes them (JSON); RecipientCap.as_args in Python
  local limits = cjson.decode(redis.call('HGET', key_account(a), 'limits') or '{}')
  local cap = type(limits) == 'table' and limits['recipient_cap']
  if type(cap) == 'table' then
    cap_max, cap_window = tonumber(cap['max']) or 0, (tonumber(cap['window_h']) or 0) * 3600
  end
end
local call = ARGV[11] or ''
local lk = key_lease(a)
local cur = redis.call('GET', lk)
if cur ~= token then
  if cur == token .. '!' then return {BEGIN.YIELD, 'changed'} end
  return {BEGIN.LOST, ''}
end
redis.call('PEXPIRE', lk, ttl)
local tstr = ''
if not_before > 0 then
  local t = redis.call('TIME')
  local tnow = tonumber(t[1]) + tonumber(t[2]) / 1000000
  if tnow < not_before then return {BEGIN.EARLY, string.format('%.6f', not_before - tnow)} end
  tstr = string.format('%.6f', tnow)
end
local jk = key_job(id)
local job = redis.call('HGETALL', jk)
local f = {}
for i = 1, #job, 2 do f[job[i]] = job[i + 1] end
local st = f['state']
if not st then
  redis.call('LREM', key_claimed(a), 0, id)
  return {BEGIN.SKIP, 'missing'}
end
-- the same BEGIN run again (a client retry after a lost reply; a failover): the job is already this call's,
-- answer as the first run did. Any other BEGIN finding it `sending` is a session that died mid-call.
local replay = st == STATE.SENDING and call ~= '' and f['call'] == call and f['lease'] == token
if replay then st = STATE.QUEUED end
if st == STATE.SENDING then
  dead_letter(jk, id, STATE.SENDING, DEAD_REASON.UNKNOWN_OUTCOME, 'ambiguous',
    'a worker died during the vendor call; the message may have been sent', now)
  redis.call('LREM', key_claimed(a), 0, id)
  return {BEGIN.SKIP, DEAD_REASON.UNKNOWN_OUTCOME}
end
if st ~= STATE.QUEUED then
  redis.call('LREM', key_claimed(a), 0, id)
  return {BEGIN.SKIP, st}
end
local camp = f['campaign']
if f['op'] ~= 'revoke' and not replay then  -- a replay passed these checks on its first run
  if message_owner_gone(camp, f['created_by'], f['owner_key']) then
    move(jk, STATE.QUEUED, STATE.CANCELLED, '')
    redis.call('HSET', jk, 'updated', now, 'cancelled_at', now, 'reason', CANCEL_REASON.OWNER_REVOKED)
    redis.call('LREM', key_claimed(a), 0, id)
    retain(id)
    return {BEGIN.SKIP, CANCEL_REASON.OWNER_REVOKED}
  end
  local to = f['to'] or ''
  local why = nil
  if f['nosupp'] ~= '1' and (redis.call('HEXISTS', key_suppressions(a), to) == 1
      or redis.call('HEXISTS', key_suppressions('*'), to) == 1) then
    why = SKIP_REASON.SUPPRESSED
  elseif cap_max > 0 and cap_window > 0 and camp and camp ~= '' then
    local rk = key_recipient_sends(a, to)
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', tonumber(now) - cap_window)
    if not redis.call('ZSCORE', rk, id) and redis.call('ZCARD', rk) >= cap_max then
      if redis.call('HGET', key_campaign(camp), 'on_cap') == 'wait' then
        local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
        local due_at = string.format('%.3f', tonumber(oldest[2]) + cap_window)
        redis.call('HSET', jk, 'state', STATE.SCHEDULED, 'updated', now, 'waiting', SKIP_REASON.FREQUENCY_CAP)
        count(camp, STATE.QUEUED, STATE.SCHEDULED)
        redis.call('ZADD', key_due(), due_at, id)
        redis.call('LREM', key_claimed(a), 0, id)
        return {BEGIN.SKIP, 'frequency_cap_wait'}
      end
      why = SKIP_REASON.FREQUENCY_CAP
    else
      redis.call('ZADD', rk, now, id)
      redis.call('EXPIRE', rk, math.ceil(cap_window))
    end
  end
  if why then
    redis.call('HSET', jk, 'state', STATE.SKIPPED, 'skip_reason', why, 'updated', now)
    count(camp, STATE.QUEUED, STATE.SKIPPED)
    redis.call('LREM', key_claimed(a), 0, id)
    retain(id)
    return {BEGIN.SKIP, why}
  end
end
local template = ''
if camp and camp ~= '' then
  if string.find(',' .. known .. ',', ',' .. camp .. ',', 1, true) then
    template = '='
  else
    template = redis.call('HGET', key_campaign(camp), 'message') or ''
  end
end
if not replay then
  local attempts = tonumber(f['attempts'] or '0') + 1
  redis.call('HSET', jk, 'state', STATE.SENDING, 'lease', token, 'started', now, 'updated', now, 'attempts', attempts,
    'call', call)
  count(camp, STATE.QUEUED, STATE.SENDING)
  f['state'], f['lease'], f['started'], f['updated'], f['attempts'] = STATE.SENDING, token, now, now, tostring(attempts)
  f['call'] = call
end
local flat = {}
for k, v in pairs(f) do flat[#flat + 1] = k; flat[#flat + 1] = v end
return {BEGIN.GO, template, tstr, flat}
