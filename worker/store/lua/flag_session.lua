--!include prelude
-- ARGV: prefix, account. Flags the account's session, if one is in flight, to end at its next job (its
-- status or limits changed): see flag_lease in the prelude.
flag_lease(ARGV[2])
return 1
