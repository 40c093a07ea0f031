--[[
  Ask for the revoke of each sent job not asked for before (request_revoke in the prelude).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] now  [3] window_s  [4] vendors without a revoke (comma-separated)
        [5..] job ids
  Returns {queued (pending), too_late, unsupported, skipped} counts.
]]
--!include prelude
local now, window, unsupported = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local n = {pending = 0, too_late = 0, unsupported = 0, skipped = 0}
for i = 5, #ARGV do
  local got = request_revoke(ARGV[i], now, window, unsupported)
  if got then n[got] = n[got] + 1 else n.skipped = n.skipped + 1 end
end
if n.pending > 0 then wake() end
return {n.pending, n.too_late, n.unsupported, n.skipped}
