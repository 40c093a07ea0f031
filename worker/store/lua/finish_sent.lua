--[[
  FINISH a send that went out: the job becomes `sent` with the vendor's ids.
  KEYS: none (names are built from the prefix, ARGV[1]; keys.py LAYOUT)
  ARGV: [1..16] as every FINISH (prelude_finish.lua, "FINISH"); [17..] field, value, ... (the vendor ids and
        media fields to store on the job)
  Returns {'ok' | 'stale', end time, throttles} (prelude_finish.lua, "FINISH"), and when ARGV[16] ends the
  session, a 4th element: RELEASE's answer (prelude_release.lua), whatever the first three say.
  A job recovered as an unknown outcome (dead) while the call ran is taken back out of the dead letters:
  now we know it went out. A campaign's send counts toward auto-pause; sent while its campaign is being
  recalled, its revoke is asked for at once.
]]
--!include prelude
--!include prelude_release
--!include prelude_finish
-- the reply, with RELEASE's answer when this FINISH ends the session (ARGV[16])
local function ended(reply)
  if ARGV[16] ~= '' then reply[4] = release_session(ARGV[2], ARGV[3], ARGV[16]) end
  return reply
end
local f, reply = finish_open()
if not f then return ended(reply) end
local jk, id, now, ttl, st, camp = f.jk, f.id, f.now, f.ttl, f.st, f.camp
if st == STATE.DEAD then
  if redis.call('HGET', jk, 'reason') ~= DEAD_REASON.UNKNOWN_OUTCOME then
    redis.call('RPUSH', f.hk, f.entry)
    return ended({'stale', f.tstr, f.throttles})
  end
  -- recovered as an unknown outcome while this call was still running: now we know it went out
  redis.call('ZREM', key_dlq(), id)
  redis.call('HDEL', jk, 'reason', 'error_class', 'error', 'dead_at')
end
-- the history: a job sent at its first attempt keeps that one entry in its hash (field h0); any other
-- goes to its history list (Ledger.history reads both, h0 first: so never after a requeue's entry)
local first = st == STATE.SENDING and f.attempts == '1' and not f.replays and redis.call('EXISTS', f.hk) == 0
if not first then redis.call('RPUSH', f.hk, f.entry) end
local fields = {'state', STATE.SENT, 'updated', now, 'sent_at', now}
if first then fields[#fields + 1] = 'h0'; fields[#fields + 1] = f.entry end
for i = FINISH_X, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', jk, unpack(fields))
count(camp, st, STATE.SENT)
if f.last_error then redis.call('HDEL', jk, 'last_error') end
retain(id, ttl, first)
-- a test send of a campaign that went out: starting the campaign may require one
local test_of = f.test_of
if test_of and redis.call('EXISTS', key_campaign(test_of)) == 1 then
  redis.call('HINCRBY', key_campaign(test_of), 'tests_sent', 1)
end
watch_outcome(camp, nil, now)
tally(camp, 's', now, ttl)
if camp and camp ~= '' then
  -- sent while its campaign is being recalled (it was in flight): its revoke is asked for now
  local window, unsupported = unpack(redis.call('HMGET', key_campaign(camp), 'recall_window', 'recall_unsupported'))
  if window and request_revoke(id, now, tonumber(window), unsupported or '') == RECALL.PENDING then wake() end
end
return ended({'ok', f.tstr, f.throttles})
