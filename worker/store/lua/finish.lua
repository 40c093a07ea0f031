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
-- The history entry's `call` (the id its BEGIN got) fences a replay: FINISH run again after a lost reply
-- (a client retry, a failover) finds it recorded (`fin`) and answers 'ok' without writing anything twice.
-- Returns {'ok' | 'stale', end time, throttles}: 'stale' when the job is no longer this batch's (history
-- kept anyway); throttles = the account's throttling answers in a row, this call included (the worker
-- pauses the account past its limit).
-- the longest prefix of a UTF-8 text within n bytes that does not cut a character
local function utf8_prefix(text, n)
  if #text <= n then return text end
  local cut = n
  while cut > 0 do
    local b = string.byte(text, cut + 1)
    if b < 128 or b >= 192 then break end  -- not a continuation byte: a character starts there
    cut = cut - 1
  end
  return string.sub(text, 1, cut)
end
-- Auto-pause (docs/design.md, "Campaign safety"): a campaign keeps its latest final outcomes in a window
-- ('+' sent, 'x' .. the vendor's text for dead) and its failures in a row. Past a threshold (fields ap_*,
-- set at creation; 0 = off) an active campaign pauses itself with the reason, as an operator's pause does.
local function watch_outcome(camp, err, now)
  if not camp or camp == '' then return end
  local ck = key_campaign(camp)
  local ratio, window, streak_at, least, status, fails, run = unpack(redis.call('HMGET', ck,
    'ap_ratio', 'ap_window', 'ap_streak', 'ap_min', 'status', 'ap_fails', 'ap_streak_n'))
  ratio, window, streak_at = tonumber(ratio) or 0, tonumber(window) or 0, tonumber(streak_at) or 0
  least = tonumber(least) or 0
  if ratio <= 0 then window = 0 end
  if window <= 0 and streak_at <= 0 then return end
  local keep = window
  if keep <= 0 then keep = streak_at end
  local wk = key_campaign_outcomes(camp)
  local entry, streak = '+', 0
  if err then entry = 'x' .. utf8_prefix(err, 120) end
  local n = redis.call('LPUSH', wk, entry)
  if err then
    fails = redis.call('HINCRBY', ck, 'ap_fails', 1)
    streak = redis.call('HINCRBY', ck, 'ap_streak_n', 1)
  else
    fails = tonumber(fails) or 0
    if (tonumber(run) or 0) > 0 then redis.call('HSET', ck, 'ap_streak_n', 0) end  -- a success ends a run
  end
  while n > keep do
    if string.sub(redis.call('RPOP', wk) or '', 1, 1) == 'x' then fails = redis.call('HINCRBY', ck, 'ap_fails', -1) end
    n = n - 1
  end
  if status ~= 'active' then return end
  local why, span
  if streak_at > 0 and streak >= streak_at then
    why, span = streak .. ' in a row failed', math.min(streak, n)
  elseif window > 0 and n >= least and fails > 0 and fails / n >= ratio then
    why, span = fails .. ' of the last ' .. n .. ' failed', n
  else
    return
  end
  local total, sent, dead, cancelled, skipped = unpack(redis.call('HMGET', ck, 'total', 'n:sent', 'n:dead',
    'n:cancelled', 'n:skipped'))
  if (tonumber(sent) or 0) + (tonumber(dead) or 0) + (tonumber(cancelled) or 0) + (tonumber(skipped) or 0)
      >= (tonumber(total) or 0) then
    return  -- its last delivery: nothing is left to hold back, and a replay of its dead letters must go out
  end
  -- the vendor's texts among those failures, most frequent first
  local counts, texts = {}, {}
  for _, e in ipairs(redis.call('LRANGE', wk, 0, span - 1)) do
    if string.sub(e, 1, 1) == 'x' then
      local text = string.sub(e, 2)
      if text == '' then text = '?' end
      if not counts[text] then counts[text] = 0; texts[#texts + 1] = text end
      counts[text] = counts[text] + 1
    end
  end
  table.sort(texts, function(x, y)
    if counts[x] ~= counts[y] then return counts[x] > counts[y] end
    return x < y
  end)
  local parts = {}
  for i = 1, math.min(3, #texts) do parts[i] = texts[i] .. ' ×' .. counts[texts[i]] end
  if #texts > 3 then parts[#parts + 1] = '…' end
  local reason = 'error threshold — ' .. why .. ': ' .. table.concat(parts, ', ')
  pause_campaign(camp, 'active', reason, now, cjson.decode(redis.call('HGET', ck, 'accounts') or '[]'))
  redis.call('HSET', ck, 'auto_paused_at', now)
end
-- a campaign job that was not sent gives back its place under the recipient cap (begin.lua took it); an
-- unknown outcome keeps it (the message may have gone out)
local function release_cap(jk, id, a, camp)
  if camp and camp ~= '' then redis.call('ZREM', key_recipient_sends(a, redis.call('HGET', jk, 'to') or ''), id) end
end
-- The console's charts: each outcome counted in its minute, per campaign ('-' for single messages), in
-- one hash per hour kept as long as jobs: one HINCRBY per finish (an EXPIRE when a field is new).
local function tally(camp, what, now, ttl)
  local t = math.floor(tonumber(now))
  local mk = key_minutes(math.floor(t / 3600))
  if camp == nil or camp == false or camp == '' then camp = '-' end
  if redis.call('HINCRBY', mk, camp .. '|' .. math.floor(t / 60) .. '|' .. what, 1) == 1 then
    if not ttl or ttl <= 0 then ttl = CHART_KEEP_S end  -- the jobs' retention, or this when jobs stay
    redis.call('EXPIRE', mk, ttl)
  end
end
local a, token, id, now, outcome = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl = tonumber(ARGV[8])
local called, ended, fraction, slow, day, day_n = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local keep, vendor = tonumber(ARGV[15]), ARGV[16]
local X = 17
local call = cjson.decode(ARGV[7])['call']
local jk = key_job(id)
if call and call ~= '' and redis.call('HGET', jk, 'fin') == call then
  -- this call's outcome is already on the books (a retried FINISH): nothing is applied twice
  local tstr = ''
  if called == '1' then tstr = string.format('%.6f', ended) end
  return {'ok', tstr, 0}
end
local tstr, throttles = record_pace(a, token, called, ended, fraction, slow, day, day_n, keep, vendor)
local hk = key_history(id)
local st, lease, priority, camp, last_error, attempts, replays, test_of = unpack(redis.call('HMGET', jk,
  'state', 'lease', 'priority', 'campaign', 'last_error', 'attempts', 'replays', 'test_of'))
if lease ~= token or (st ~= 'sending' and st ~= 'dead') then
  redis.call('RPUSH', hk, ARGV[7])  -- the attempt is on the record even when the job is no longer ours
  return {'stale', tstr, throttles}
end
if call and call ~= '' then redis.call('HSET', jk, 'fin', call) end
redis.call('LREM', key_claimed(a), 0, id)
if outcome == 'recall' then
  -- a revoke job ends here whatever happened (never retried): ARGV[X] its outcome, ARGV[X + 1] the error
  local result, err = ARGV[X], ARGV[X + 1]
  redis.call('RPUSH', hk, ARGV[7])
  if st ~= 'sending' then
    -- recovered as failed (unknown) while the call ran: only a success corrects that
    if result ~= 'recalled' then return {'stale', tstr, throttles} end
    redis.call('HDEL', jk, 'reason', 'error_class', 'dead_at')
  end
  local final = 'cancelled'  -- no vendor call was made
  if result == 'recalled' then final = 'sent' elseif result == 'failed' then final = 'dead' end
  redis.call('HSET', jk, 'state', final, 'updated', now, 'recall', result, 'error', err)
  recall_outcome(redis.call('HGET', jk, 'target'), result, err, now)
  retain(id, ttl)
  return {'ok', tstr, throttles}
end
if st == 'dead' then
  if outcome ~= 'sent' or redis.call('HGET', jk, 'reason') ~= 'unknown_outcome' then
    redis.call('RPUSH', hk, ARGV[7])
    return {'stale', tstr, throttles}
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
  -- a test send of a campaign that went out: starting the campaign may require one
  if test_of and redis.call('EXISTS', key_campaign(test_of)) == 1 then
    redis.call('HINCRBY', key_campaign(test_of), 'tests_sent', 1)
  end
  watch_outcome(camp, nil, now)
  tally(camp, 's', now, ttl)
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
  release_cap(jk, id, a, camp)
  tally(camp, 'r', now, ttl)
elseif outcome == 'dead' then
  if ARGV[X] ~= 'unknown_outcome' then release_cap(jk, id, a, camp) end
  dead_letter(jk, id, st, ARGV[X], ARGV[X + 1], ARGV[X + 2], now, camp, ttl)
  watch_outcome(camp, ARGV[X + 2], now)
  tally(camp, 'x', now, ttl)
elseif outcome == 'requeue' then
  redis.call('HINCRBY', jk, 'attempts', -1)
  redis.call('HSET', jk, 'updated', now, 'last_error', ARGV[X + 2], 'last_error_class', ARGV[X + 1])
  place(jk, id, a, priority, true, camp, st)
  release_cap(jk, id, a, camp)
end
return {'ok', tstr, throttles}
