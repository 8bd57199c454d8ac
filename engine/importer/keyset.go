package importer

import (
	"encoding/binary"
	"hash/maphash"
)

// keySet follows a dedup stream's keys through a request, to tell whether
// the staged records can be upserted as they are: no record deletes and no
// key comes twice. Keys are remembered by a 64-bit hash, so a collision
// only costs the full merge; past maxKeys the set gives up the same way.
type keySet struct {
	seen    map[uint64]struct{}
	repeats bool // a delete, a repeated key (or hash), a nested key, or too many
	buf     []byte
}

const maxKeys = 1 << 20

var keySeed = maphash.MakeSeed()

// note takes one record of stream s (its fields with their columns).
func (k *keySet) note(s *stream, deleted bool, fields []field) {
	if k.repeats {
		return
	}
	if deleted || len(k.seen) >= maxKeys {
		k.repeats = true
		return
	}
	b := k.buf[:0]
	for _, p := range s.key {
		if len(p) > 1 {
			k.repeats = true // a value inside a jsonb column: not worth it
			return
		}
		col := s.colIndex[p[0]]
		found := false
		for _, f := range fields {
			if f.col == col {
				b = append(b, f.kind)
				b = binary.AppendUvarint(b, uint64(len(f.value)))
				b = append(b, f.value...)
				found = true
				break
			}
		}
		if !found {
			b = append(b, 0)
		}
	}
	k.buf = b
	h := maphash.Bytes(keySeed, b)
	if k.seen == nil {
		k.seen = map[uint64]struct{}{}
	}
	n := len(k.seen)
	if k.seen[h] = struct{}{}; len(k.seen) == n { // one map operation: h was there
		k.repeats = true
		k.seen = nil
	}
}

// plain says whether the request's records can be upserted as they are.
func (k *keySet) plain() bool { return !k.repeats }
