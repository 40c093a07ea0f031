-- Helpers only the FINISH scripts (finish_*.lua) share: included after prelude.lua (`--!include prelude_finish`),
-- so the other scripts do not define them at every call.
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
  if status ~= CAMPAIGN.ACTIVE then return end
  local why, span
  if streak_at > 0 and streak >= streak_at then
    why, span = streak .. ' in a row failed', math.min(streak, n)
  elseif window > 0 and n >= least and fails > 0 and fails / n >= ratio then
    why, span = fails .. ' of the last ' .. n .. ' failed', n
  else
    return
  end
  local total, sent, dead, cancelled, skipped = unpack(redis.call('HMGET', ck, 'total', 'n:' .. STATE.SENT,
    'n:' .. STATE.DEAD, 'n:' .. STATE.CANCELLED, 'n:' .. STATE.SKIPPED))
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
  pause_campaign(camp, CAMPAIGN.ACTIVE, reason, now, cjson.decode(redis.call('HGET', ck, 'accounts') or '[]'))
  redis.call('HSET', ck, 'auto_paused_at', now)
  -- on the record as an operator's pause is, under audit.py's WORKER (trimmed by age at the next API entry)
  redis.call('XADD', key_audit(), '*', 'key', 'worker', 'role', 'worker', 'action', 'campaign.auto_pause',
    'target', 'campaign:' .. camp, 'status', 200)
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
-- FINISH, one script per outcome (finish_sent/_retry/_dead/_requeue/_recall.lua), all with this ARGV:
--   [1] prefix  [2] account  [3] token (the session's lease)  [4] job id  [5] now
--   [6] the attempt's history entry (JSON; its `call`, the id its BEGIN got, fences a replay)
--   [7] retention_s (how long finished jobs are kept; 0 = forever)
--   [8..15] the pacing record of the call (a worker.store.ledger.PaceRecord, which the worker also applies
--   to its own copy): called (0|1: a vendor call was made), end (when the answer arrived, on Redis's clock
--   as the worker reads it: the latest that clock can read, its last TIME reading plus the local time since
--   that call left: never earlier than the truth, so the gap after it is never short), jitter fraction,
--   slow-down ('' = unchanged, else the new factor, stamped at the end), local day, sends on that day,
--   window length to keep (0 = no window), vendor ('' = no vendor-wide rate)
--   [16] '' (the session goes on), or the account's next sendable moment: the session ends in this FINISH, as
--   RELEASE would end it (finish_sent.lua only, the last job of a session; '' in the others)
--   [17..] the outcome's own (FINISH_X), listed in each script's header.
-- and this reply: {'ok' | 'stale', end time ('' = no call), throttles}: 'stale' when the job is no longer
-- this session's (its history entry kept anyway); throttles = the account's throttling answers in a row,
-- this call included (the worker pauses the account past its limit).
local FINISH_X = 17
-- The common start of a FINISH: the pacing record is written first, even when the lease was lost
-- meanwhile (the call happened and the next one must wait for it). FINISH run again after a lost reply (a
-- client retry, a failover) finds its call recorded (`fin`) and answers 'ok' without writing anything
-- twice. Returns the job's context `f`, or nil and the reply to give at once (a replay, or 'stale' when
-- the job is not this session's `sending` or `dead` job). With `f`, the fence is set and the job is off the
-- session's claimed list.
local function finish_open()
  local a, token, id, entry = ARGV[2], ARGV[3], ARGV[4], ARGV[6]
  local called, ended = ARGV[8], tonumber(ARGV[9])
  local call = cjson.decode(entry)['call']
  local jk = key_job(id)
  if call and call ~= '' and redis.call('HGET', jk, 'fin') == call then
    -- this call's outcome is already on the books (a retried FINISH): nothing is applied twice
    local tstr = ''
    if called == '1' then tstr = string.format('%.6f', ended) end
    return nil, {'ok', tstr, 0}
  end
  local tstr, throttles = record_pace(a, token, called, ended, ARGV[10], ARGV[11], ARGV[12], ARGV[13],
    tonumber(ARGV[14]), ARGV[15])
  local hk = key_history(id)
  local st, lease, priority, camp, last_error, attempts, replays, test_of = unpack(redis.call('HMGET', jk,
    'state', 'lease', 'priority', 'campaign', 'last_error', 'attempts', 'replays', 'test_of'))
  if lease ~= token or (st ~= STATE.SENDING and st ~= STATE.DEAD) then
    redis.call('RPUSH', hk, entry)  -- the attempt is on the record even when the job is no longer ours
    return nil, {'stale', tstr, throttles}
  end
  if call and call ~= '' then redis.call('HSET', jk, 'fin', call) end
  redis.call('LREM', key_claimed(a), 0, id)
  return {a = a, id = id, now = ARGV[5], entry = entry, ttl = tonumber(ARGV[7]), jk = jk, hk = hk, st = st,
    priority = priority, camp = camp, last_error = last_error, attempts = attempts, replays = replays,
    test_of = test_of, tstr = tstr, throttles = throttles}
end
-- The common end of a FINISH that did not send: a job recovered as an unknown outcome (dead) while the call
-- ran stays so (only a success corrects that; history kept), else the attempt goes on its history list.
-- Returns the 'stale' reply, or nil to go on.
local function finish_unsent(f)
  redis.call('RPUSH', f.hk, f.entry)
  if f.st == STATE.DEAD then return {'stale', f.tstr, f.throttles} end
  return nil
end
