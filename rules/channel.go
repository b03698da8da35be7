package rules

import (
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/jackc/pglogrepl"
)

// appendChannelMessage appends the channel message of section s:
// {"section":…,"keys":[…],"patterns":[…],"lsn":…,"commit_time":…}, with
// "patterns" left out when there are none. It is what encoding/json makes
// of the same fields, without reflection.
func appendChannelMessage(dst []byte, s string, p *Plan, c replication.Commit) []byte {
	dst = append(dst, `{"section":`...)
	dst = appendJSONString(dst, s)
	dst = append(dst, `,"keys":[`...)
	n := 0
	for i := range p.Keys {
		if p.Keys[i].Section == s {
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, p.Keys[i].Key)
			n++
		}
	}
	dst = append(dst, ']')
	n = 0
	for i := range p.Patterns {
		if p.Patterns[i].Section == s {
			if n == 0 {
				dst = append(dst, `,"patterns":[`...)
			} else {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, p.Patterns[i].Pattern)
			n++
		}
	}
	if n > 0 {
		dst = append(dst, ']')
	}
	dst = append(dst, `,"lsn":"`...)
	dst = appendLSN(dst, c.CommitLSN)
	dst = append(dst, `","commit_time":"`...)
	dst = c.CommitTime.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `"}`...)
}

// appendGapMessage appends the channel message of section s in a gap plan:
// the message appendChannelMessage makes, with ,"gap":true,"reason":…
// added, so that a consumer tells "everything may be stale" from an
// ordinary invalidation.
func appendGapMessage(dst []byte, s string, p *Plan, c replication.Commit, reason string) []byte {
	dst = appendChannelMessage(dst, s, p, c)
	dst = append(dst[:len(dst)-1], `,"gap":true,"reason":`...) // in place of the closing brace
	dst = appendJSONString(dst, reason)
	return append(dst, '}')
}

// appendLSN appends lsn as pg_lsn text, as pglogrepl.LSN.String does.
func appendLSN(dst []byte, lsn pglogrepl.LSN) []byte {
	dst = appendHex(dst, uint32(lsn>>32))
	dst = append(dst, '/')
	return appendHex(dst, uint32(lsn))
}

func appendHex(dst []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}
