--[[
  Set an account's status only if it was not changed after a given moment (a resume whose vendor check
  took seconds must not undo a pause or an Offline callback that came meanwhile).
  KEYS: none (every name is built from the prefix, ARGV[1]: worker/store/keys.py LAYOUT)
  ARGV: [1] prefix  [2] account  [3] unchanged_since (its status_changed as read, seconds)
        [4] status  [5] status_reason  [6] status_changed (now)
  Returns 1 when set; 0 when the account is gone or its status changed after ARGV[3].
]]
local key = key_account(ARGV[2])
local changed = redis.call('HGET', key, 'status_changed')
if not changed or tonumber(changed) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', key, 'status', ARGV[4], 'status_reason', ARGV[5], 'status_changed', ARGV[6])
return 1
