--[[
  FINISH a revoke job (never retried: it ends here whatever happened): `sent` when recalled, `dead` when
  the call failed, `cancelled` when no call was made; its outcome goes on the message it revoked.
  KEYS: none (names are built from the prefix, ARGV[1]; keys.py LAYOUT)
  ARGV: [1..16] as every FINISH (prelude_finish.lua, "FINISH"); [17] outcome (a RecallOutcome: recalled,
        too_late, unsupported or failed), [18] error ('' = none)
  Returns {'ok' | 'stale', end time, throttles} (prelude_finish.lua, "FINISH"). A revoke job recovered as failed
  (unknown outcome) while the call ran is corrected only by a success; else 'stale'.
]]
--!include prelude
--!include prelude_finish
local f, reply = finish_open()
if not f then return reply end
local result, err = ARGV[FINISH_X], ARGV[FINISH_X + 1]
local jk, now = f.jk, f.now
redis.call('RPUSH', f.hk, f.entry)
if f.st ~= STATE.SENDING then
  -- recovered as failed (unknown) while the call ran: only a success corrects that
  if result ~= RECALL.RECALLED then return {'stale', f.tstr, f.throttles} end
  redis.call('HDEL', jk, 'reason', 'error_class', 'dead_at')
end
local final = STATE.CANCELLED  -- no vendor call was made
if result == RECALL.RECALLED then final = STATE.SENT elseif result == RECALL.FAILED then final = STATE.DEAD end
redis.call('HSET', jk, 'state', final, 'updated', now, 'recall', result, 'error', err)
recall_outcome(redis.call('HGET', jk, 'target'), result, err, now)
retain(f.id, f.ttl)
return {'ok', f.tstr, f.throttles}
