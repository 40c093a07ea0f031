--[[
  FINISH an attempt that ends the job: it becomes `dead` (a dead letter, or for a revoke job a failed
  recall on its message).
  KEYS: none (names are built from the prefix, ARGV[1]; keys.py LAYOUT)
  ARGV: [1..16] as every FINISH (prelude_finish.lua, "FINISH"); [17] reason (a DeadReason), [18] error_class,
        [19] error
  Returns {'ok' | 'stale', end time, throttles} (prelude_finish.lua, "FINISH").
  The job gives back its place under the recipient cap unless its outcome is unknown (it may have gone
  out), and counts toward its campaign's auto-pause.
]]
--!include prelude
--!include prelude_finish
local f, reply = finish_open()
if not f then return reply end
reply = finish_unsent(f)
if reply then return reply end
local X = FINISH_X
local jk, id, camp = f.jk, f.id, f.camp
if ARGV[X] ~= DEAD_REASON.UNKNOWN_OUTCOME then release_cap(jk, id, f.a, camp) end
dead_letter(jk, id, f.st, ARGV[X], ARGV[X + 1], ARGV[X + 2], f.now, camp, f.ttl)
watch_outcome(camp, ARGV[X + 2], f.now)
tally(camp, 'x', f.now, f.ttl)
return {'ok', f.tstr, f.throttles}
