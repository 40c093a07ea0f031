--[[
  FINISH an attempt that did not count (the account is down): the job goes back to the head of its queue
  (`queued`), its attempt not counted; cancelled instead when its campaign was cancelled meanwhile.
  KEYS: none (names are built from the prefix, ARGV[1]; keys.py LAYOUT)
  ARGV: [1..16] as every FINISH (prelude_finish.lua, "FINISH"); [17] '' (unused), [18] error_class, [19] error
  Returns {'ok' | 'stale', end time, throttles} (prelude_finish.lua, "FINISH").
]]
--!include prelude
--!include prelude_finish
local f, reply = finish_open()
if not f then return reply end
reply = finish_unsent(f)
if reply then return reply end
local X = FINISH_X
local jk, id, camp = f.jk, f.id, f.camp
redis.call('HINCRBY', jk, 'attempts', -1)
redis.call('HSET', jk, 'updated', f.now, 'last_error', ARGV[X + 2], 'last_error_class', ARGV[X + 1])
place(jk, id, f.a, f.priority, true, camp, f.st)
release_cap(jk, id, f.a, camp)
return {'ok', f.tstr, f.throttles}
