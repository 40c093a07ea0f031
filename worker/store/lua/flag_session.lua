--[[
  Flag the account's session, if one is in flight, to end at its next job (its status or limits
  changed): see flag_lease in the prelude.
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account
  Returns 1.
]]
--!include prelude
flag_lease(ARGV[2])
return 1
