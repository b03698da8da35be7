package readthrough

import (
	"strings"

	"github.com/redis/go-redis/v9"
)

// observe returns the revision KEYS[1] holds, first setting it to ARGV[1]
// (a token that is not an LSN, so that cdcd's forward-only update
// overwrites it) when absent: a revision must exist before the database is
// read, or a pattern invalidation, which moves only the revisions it
// finds, would pass it by. One script, so the value returned is never the
// nil an eviction could leave between a SET NX and a GET.
var observe = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// compareAndSet sets KEYS[1] to ARGV[1] (expiring in ARGV[2] ms when
// positive) if every revision KEYS[2..] still holds the value read before
// the load, ARGV[3..]. Revisions are compared for equality only: on a gap
// cdcd may set them lower. A missing revision has moved.
var compareAndSet = redis.NewScript(`
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then return 0 end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
`)

// keep turns a provisional value into a lasting one: if KEYS[1] still holds
// ARGV[1], it expires in ARGV[2] ms (when positive) or never.
var keep = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
`)

// slot is the Redis Cluster hash slot of key: CRC16 (XMODEM) of its hash
// tag, or of the whole key when it has none, modulo 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for k := 0; k < len(key); k++ {
		crc ^= uint16(key[k]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}
