--[[
  PART: one part of a sequence job (docs/design.md, "Sequences"). BEGIN marked the job `sending`; each
  part is its own vendor call, fenced here so a part that may have gone out is never sent again: `begin`
  before a part's call, `end` after it; FINISH ends the job once its last part ended (or one failed).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] job id  [5] now  [6] lease_ttl_ms
        [7] phase (begin|end|unlock)  [8] part index, then by phase (the recipient's sequence lock lives
        SEQUENCE_LOCK_S, renewed at each part):
  begin:  [9] not_before (Redis time the part may start, its pacing gap after the previous part)
          [10] parts in all.
          The session must still hold the lease (a flag does not stop a sequence under way: its next
          session would find the job `sending`) and the job must be `sending` under it. The first part
          takes the recipient's sequence lock (held by another sequence still sending: 'busy'); later
          parts renew it. Records the part index being sent.
          Returns {'go', redis now} | {'early', seconds} | {'busy', holder} | {'lost', why}
          (worker.store.ledger.PartBegin).
  end:    [9..16] the call's pacing record (called, ended, fraction, slow, day, day_n, keep, vendor, as
          FINISH's [8..15]), [17] the part's record (JSON), [18] advance (1: the part was sent, the next
          index is index + 1), [19..] the job's top-level id fields for the first part sent (field,
          value, ...). The pacing is written even when the job is no longer ours (the call happened).
          Returns {'ok'|'stale', end, throttles}.
  unlock: frees the recipient's sequence lock if this job holds it. Returns {'ok'}.
]]
--!include prelude
local a, token, id, now, ttl, phase, index = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7],
  tonumber(ARGV[8])
local jk = key_job(id)
local st, lease, to = unpack(redis.call('HMGET', jk, 'state', 'lease', 'to'))
local sk = key_seq_lock(to or '')
if phase == 'unlock' then
  if redis.call('GET', sk) == id then redis.call('DEL', sk) end
  return {'ok'}
end
if phase == 'end' then
  local record = cjson.decode(ARGV[17])
  local mark = ''
  if record['call'] then
    -- the BEGIN's call id and the part: a PART end retried after a lost reply applies once
    mark = record['call'] .. ':' .. index
    record['call'] = nil
    if redis.call('HGET', jk, 'pfin') == mark then
      local tstr = ''
      if ARGV[9] == '1' then tstr = string.format('%.6f', tonumber(ARGV[10])) end
      return {'ok', tstr, 0}
    end
  end
  local tstr, throttles = record_pace(a, token, ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12], ARGV[13],
    ARGV[14], tonumber(ARGV[15]), ARGV[16])
  if lease ~= token or st ~= STATE.SENDING then return {'stale', tstr, throttles} end
  local parts = cjson.decode(redis.call('HGET', jk, 'parts') or '[]')
  parts[index + 1] = record
  local fields = {'parts', cjson.encode(parts), 'updated', now, 'pfin', mark}
  if ARGV[18] == '1' then fields[#fields + 1] = 'part'; fields[#fields + 1] = tostring(index + 1) end
  for i = 19, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', jk, unpack(fields))
  redis.call('PEXPIRE', key_lease(a), ttl)
  if redis.call('GET', sk) == id then redis.call('EXPIRE', sk, SEQUENCE_LOCK_S) end
  return {'ok', tstr, throttles}
end
-- begin
local cur = redis.call('GET', key_lease(a))
if (cur ~= token and cur ~= token .. '!') or lease ~= token or st ~= STATE.SENDING then
  return {'lost', st or 'missing'}
end
local not_before = tonumber(ARGV[9])
local t = redis.call('TIME')
local tnow = tonumber(t[1]) + tonumber(t[2]) / 1000000
if tnow < not_before then return {'early', string.format('%.6f', not_before - tnow)} end
local holder = redis.call('GET', sk)
-- a holder no longer sending (it ended, or was recovered after a crash) holds nothing
if holder and holder ~= id and redis.call('HGET', key_job(holder), 'state') == STATE.SENDING then
  return {'busy', holder}
end
redis.call('SET', sk, id, 'EX', SEQUENCE_LOCK_S)
redis.call('PEXPIRE', key_lease(a), ttl)
redis.call('HSET', jk, 'part', index, 'parts_n', ARGV[10], 'updated', now)
return {'go', string.format('%.6f', tnow)}
