-- lease.lua: renew (or release) a lease only while it is still ours.
--
-- KEYS[1]  the lease key (e.g. "{prefix}rebuild-lock")
-- ARGV[1]  our token
-- ARGV[2]  the new time to live in ms; "0" releases the lease (PEXPIRE 0 deletes it)
-- Returns 1 when renewed or released, 0 when the lease is gone or another's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
