package rules

import "github.com/cdcd/cdcd/replication"

// Everything returns the plan cdcd applies when it cannot prove it saw
// every change (a gap, for the reason given): every section invalidated —
// the key patterns of templated keys, the literal keys, every revision —
// and one message on each section's channel, marked as a gap with its
// reason, so that warmers and in-process caches hear of it too. c places
// the plan: its LSN and time are the messages' and the revisions'.
func (rs *Rules) Everything(reason string, c replication.Commit) *Plan {
	p := &Plan{Xid: c.Xid, CommitLSN: c.CommitLSN, EndLSN: c.EndLSN, CommitTime: c.CommitTime}
	for _, s := range rs.sections {
		for _, t := range s.keys {
			if t.IsLiteral() {
				p.Keys = append(p.Keys, Key{Key: t.Literal(), Section: s.name, Rule: "gap", From: FromLiteral})
			} else {
				p.Patterns = append(p.Patterns, Pattern{Pattern: t.Pattern(), Section: s.name, Rule: "gap", Reason: ReasonGap, Template: t})
			}
		}
		if s.revision != nil {
			if s.revision.IsLiteral() {
				p.Revisions = append(p.Revisions, Revision{Key: s.revision.Literal(), Section: s.name})
			} else {
				p.Revisions = append(p.Revisions, Revision{Key: s.revision.Pattern(), Section: s.name, IsPattern: true, Template: s.revision})
			}
		}
	}
	for _, s := range rs.sections {
		if s.channel != "" {
			payload := appendGapMessage(nil, s.name, p, c, reason)
			p.Messages = append(p.Messages, Message{Channel: s.channel, Section: s.name, Payload: payload})
		}
	}
	return p
}
