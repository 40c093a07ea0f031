--[[
  RELEASE: end a session. Its unprocessed jobs go back to the head of their queue, and the account waits
  in `sched` until `next_at` (its next sendable moment, from the worker's pacing) if it still has jobs.
  A session whose last job was sent ends in that job's FINISH instead (finish_sent.lua, ARGV[16]).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] token  [4] next_at
  Returns how many claimed ids were still listed, or -1 when the lease was lost (RECOVER has already
  dealt with the batch).
]]
--!include prelude
--!include prelude_release
return release_session(ARGV[2], ARGV[3], ARGV[4])
