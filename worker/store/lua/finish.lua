--!include prelude
-- ARGV: prefix, account, token, job_id, now, outcome, history_json, retention_s, then the pacing record of
-- the call (a :class:`worker.store.ledger.PaceRecord`, which the worker also applies to its own copy): called
-- (0|1: a vendor call was
-- made), end (when the answer arrived, on Redis's clock as the worker reads it: the latest that clock
-- can read, its last TIME reading plus the local time since that call left: never earlier than the
-- truth, so the gap after it is never short), jitter
-- fraction, slow-down ('' = unchanged, else the new factor, stamped at the end), local day, sends on that
-- day, window length to keep (0 = no window), vendor ('' = no vendor-wide rate), then by outcome:
-- sent:    field, value, ...             (vendor ids)
-- retry:   due_at, error_class, error
-- dead:    reason, error_class, error
-- requeue: '', error_class, error        (account down: back to the head of the queue, not counted)
-- recall:  outcome, error                (a revoke job: recalled, too_late, unsupported or failed)
-- The pacing record is written first, even when the lease was lost meanwhile: the call happened and the
-- next one must wait for it.
-- Returns {'ok' | 'stale', end time}: 'stale' when the job is no longer this batch's (history kept anyway).
local a, token, id, now, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl = tonumber(ARGV[8])
local called, ended, fraction, slow, day, day_n = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local keep, vendor = tonumber(ARGV[15]), ARGV[16]
local X = 17
local tstr = ''
if called == '1' then
  local tend = ended
  tstr = string.format('%.6f', tend)
  local pk = key_pace(a)
  local fields = {'last_end', tstr, 'r', fraction, 'day', day, 'day_n', day_n}
  if slow ~= '' then
    fields[#fields + 1] = 'slow'; fields[#fields + 1] = slow
    fields[#fields + 1] = 'slow_at'; fields[#fields + 1] = tstr
  end
  redis.call('HSET', pk, unpack(fields))
  if keep > 0 and redis.call('LPUSH', key_pace_window(a), tstr) > 2 * keep then
    redis.call('LTRIM', key_pace_window(a), 0, keep - 1)
  end
  if vendor ~= '' then
    local vk = key_vendor_pace(vendor)
    redis.call('ZADD', vk, tend, tstr .. ':' .. token)
    redis.call('ZREMRANGEBYSCORE', vk, '-inf', tend - VENDOR_WINDOW_S)
    redis.call('EXPIRE', vk, math.ceil(2 * VENDOR_WINDOW_S))
  end
end
local jk = key_job(id)
local hk = key_history(id)
local st, lease, priority, camp, last_error, attempts, replays =
  unpack(redis.call('HMGET', jk, 'state', 'lease', 'priority', 'campaign', 'last_error', 'attempts', 'replays'))
if lease ~= token or (st ~= 'sending' and st ~= 'dead') then
  redis.call('RPUSH', hk, ARGV[7])  -- the attempt is on the record even when the job is no longer ours
  return {'stale', tstr}
end
redis.call('LREM', key_claimed(a), 0, id)
if outcome == 'recall' then
  -- a revoke job ends here whatever happened (never retried): ARGV[X] its outcome, ARGV[X + 1] the error
  local result, err = ARGV[X], ARGV[X + 1]
  redis.call('RPUSH', hk, ARGV[7])
  if st ~= 'sending' then
    -- recovered as failed (unknown) while the call ran: only a success corrects that
    if result ~= 'recalled' then return {'stale', tstr} end
    redis.call('HDEL', jk, 'reason', 'error_class', 'dead_at')
  end
  local final = 'cancelled'  -- no vendor call was made
  if result == 'recalled' then final = 'sent' elseif result == 'failed' then final = 'dead' end
  redis.call('HSET', jk, 'state', final, 'updated', now, 'recall', result, 'error', err)
  recall_outcome(redis.call('HGET', jk, 'target'), result, err, now)
  retain(id, ttl)
  return {'ok', tstr}
end
if st == 'dead' then
  if outcome ~= 'sent' or redis.call('HGET', jk, 'reason') ~= 'unknown_outcome' then
    redis.call('RPUSH', hk, ARGV[7])
    return {'stale', tstr}
  end
  -- recovered as an unknown outcome while this call was still running: now we know it went out
  redis.call('ZREM', key_dlq(), id)
  redis.call('HDEL', jk, 'reason', 'error_class', 'error', 'dead_at')
end
-- the history: a job sent at its first attempt keeps that one entry in its hash (field h0); any other
-- goes to its history list (Ledger.history reads both)
local first = outcome == 'sent' and st == 'sending' and attempts == '1' and not replays
if not first then redis.call('RPUSH', hk, ARGV[7]) end
if outcome == 'sent' then
  local fields = {'state', 'sent', 'updated', now, 'sent_at', now}
  if first then fields[#fields + 1] = 'h0'; fields[#fields + 1] = ARGV[7] end
  for i = X, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', jk, unpack(fields))
  count(camp, st, 'sent')
  if last_error then redis.call('HDEL', jk, 'last_error') end
  retain(id, ttl, first)
  if camp and camp ~= '' then
    -- sent while its campaign is being recalled (it was in flight): its revoke is asked for now
    local window, unsupported = unpack(redis.call('HMGET', key_campaign(camp), 'recall_window', 'recall_unsupported'))
    if window and request_revoke(id, now, tonumber(window), unsupported or '') == 'pending' then wake() end
  end
elseif outcome == 'retry' then
  redis.call('HSET', jk, 'state', 'retrying', 'updated', now, 'last_error', ARGV[X + 2],
    'last_error_class', ARGV[X + 1])
  count(camp, st, 'retrying')
  redis.call('HINCRBY', jk, 'n_' .. ARGV[X + 1], 1)
  redis.call('ZADD', key_due(), ARGV[X], id)
elseif outcome == 'dead' then
  dead_letter(jk, id, st, ARGV[X], ARGV[X + 1], ARGV[X + 2], now, camp, ttl)
elseif outcome == 'requeue' then
  redis.call('HINCRBY', jk, 'attempts', -1)
  redis.call('HSET', jk, 'updated', now, 'last_error', ARGV[X + 2], 'last_error_class', ARGV[X + 1])
  place(jk, id, a, priority, true, camp, st)
end
return {'ok', tstr}
