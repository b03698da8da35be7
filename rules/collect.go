package rules

// What a Builder collects, each deduplicated in a smallSet: exact keys per
// section, key patterns per section, and revision keys or patterns.

type keyID struct{ section, key string }

func (k Key) id() keyID { return keyID{k.Section, k.Key} }

type patternID struct{ section, pattern string }

func (p Pattern) id() patternID { return patternID{p.Section, p.Pattern} }

type revisionID struct {
	key     string
	pattern bool
}

func (r Revision) id() revisionID { return revisionID{r.Key, r.IsPattern} }

func (b *Builder) add(key string, s *sectionState, by, from string, revision bool) {
	if revision {
		b.addRevision(key, s)
		return
	}
	// Keys are unique per section: a key two sections share is announced on
	// both sections' channels (the sink still unlinks it once).
	if s.escalated || b.keys.has(keyID{s.sec.name, key}) {
		return
	}
	if s.keys >= b.rules.opts.maxTxKeys {
		b.escalate(s, by)
		return
	}
	if b.keys.items == nil {
		b.keys.items = b.keysArr[:0]
	}
	b.keys.insert(Key{Key: key, Section: s.sec.name, Rule: by, From: from})
	s.keys++
}

func (b *Builder) addRevision(key string, s *sectionState) {
	if s.revEscalated || b.revs.has(revisionID{key, false}) {
		return
	}
	if s.revs >= b.rules.opts.maxTxKeys {
		b.escalateRevisions(s)
		return
	}
	b.insertRevision(Revision{Key: key, Section: s.sec.name})
	s.revs++
}

func (b *Builder) insertRevision(r Revision) {
	if b.revs.items == nil {
		b.revs.items = b.revsArr[:0]
	}
	b.revs.insert(r)
}

// addRevisionPattern sets every existing key matching a revision pattern.
func (b *Builder) addRevisionPattern(p string, s *sectionState) {
	if r := (Revision{Key: p, Section: s.sec.name, IsPattern: true}); !b.revs.has(r.id()) {
		b.insertRevision(r)
	}
}

// escalateRevisions replaces a section's collected revision keys by the
// revision template's pattern, as escalate does for keys.
func (b *Builder) escalateRevisions(s *sectionState) {
	s.revEscalated = true
	name := s.sec.name
	b.revs.deleteFunc(func(r Revision) bool { return r.Section == name && !r.IsPattern })
	s.revs = 0
	for _, sec := range s.definitions() {
		if rev := sec.revision; rev != nil && !rev.IsLiteral() {
			b.addRevisionPattern(rev.Pattern(), s)
		}
	}
}

// escalate replaces a section's collected keys by its key patterns: memory
// per transaction stays bounded however many rows it touches.
func (b *Builder) escalate(s *sectionState, by string) {
	s.escalated = true
	name := s.sec.name
	b.keys.deleteFunc(func(k Key) bool { return k.Section == name && k.From != FromLiteral })
	s.keys = 0
	for i := range b.keys.items {
		if b.keys.items[i].Section == name {
			s.keys++ // the literal keys stay
		}
	}
	for _, sec := range s.definitions() {
		for _, t := range sec.keys {
			if !t.IsLiteral() {
				b.pattern(t, s, by, ReasonEscalated, false)
			}
		}
	}
}

// definitions returns the section's definition and any other it had in the
// rules of parts merged in.
func (s *sectionState) definitions() []*section {
	if len(s.others) == 0 {
		return []*section{s.sec}
	}
	return append([]*section{s.sec}, s.others...)
}

func (b *Builder) pattern(t *Template, s *sectionState, by, reason string, revision bool) {
	if revision {
		b.addRevisionPattern(t.Pattern(), s)
		return
	}
	b.pats.add(Pattern{Pattern: t.Pattern(), Section: s.sec.name, Rule: by, Reason: reason})
}
