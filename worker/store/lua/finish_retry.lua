--[[
  FINISH a failed attempt to be tried again: the job becomes `retrying`, due again at ARGV[17].
  KEYS: none (names are built from the prefix, ARGV[1]; keys.py LAYOUT)
  ARGV: [1..16] as every FINISH (prelude_finish.lua, "FINISH"); [17] due_at (epoch s), [18] error_class,
        [19] error
  Returns {'ok' | 'stale', end time, throttles} (prelude_finish.lua, "FINISH").
  The job gives back its place under the recipient cap, and counts one more error of its class (n_<class>).
]]
--!include prelude
--!include prelude_finish
local f, reply = finish_open()
if not f then return reply end
reply = finish_unsent(f)
if reply then return reply end
local X = FINISH_X
local jk, id, camp = f.jk, f.id, f.camp
redis.call('HSET', jk, 'state', STATE.RETRYING, 'updated', f.now, 'last_error', ARGV[X + 2],
  'last_error_class', ARGV[X + 1])
count(camp, f.st, STATE.RETRYING)
redis.call('HINCRBY', jk, 'n_' .. ARGV[X + 1], 1)
redis.call('ZADD', key_due(), ARGV[X], id)
release_cap(jk, id, f.a, camp)
tally(camp, 'r', f.now, f.ttl)
return {'ok', f.tstr, f.throttles}
