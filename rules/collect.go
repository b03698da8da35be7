package rules

// What a Builder collects, each deduplicated in a smallSet: exact keys per
// section, key patterns per section, and revision keys or patterns. Past a
// limit — MaxTxKeys of one section, or the transaction's byte budget — a
// section's exact keys give way to its patterns. Literal keys stay: no
// pattern stands for them, and a section has only a few.

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
		b.addRevision(key, s, by)
		return
	}
	if !s.escalated && b.tx.gave(heldKeys, s.sec.name) {
		b.escalate(s, by) // in another part
	}
	literal := from == FromLiteral
	// Keys are unique per section: a key two sections share is announced on
	// both sections' channels (the sink still unlinks it once).
	if s.escalated && !literal || b.keys.has(keyID{s.sec.name, key}) {
		return
	}
	if int(s.keys) >= b.rules.opts.maxTxKeys && !literal {
		b.tx.escalateAll(s.sec.name, by, false)
		return
	}
	if b.keys.items == nil && b.first != nil {
		b.keys.items = b.first.keys[:0]
	}
	b.keys.insert(Key{Key: key, Section: s.sec.name, Rule: by, From: from})
	s.keys++
	if literal {
		b.charge(keyCost) // the string is the template's; escalation keeps it
		return
	}
	b.chargeSection(s, int64(len(key))+keyCost, false)
	b.keepBudget()
}

func (b *Builder) addRevision(key string, s *sectionState, by string) {
	if !s.revEscalated && b.tx.gave(heldRevisions, s.sec.name) {
		b.escalateRevisions(s, true) // in another part
	}
	literal := b.literalRevision(s, key)
	if s.revEscalated && !literal || b.revs.has(revisionID{key, false}) {
		return
	}
	if int(s.revs) >= b.rules.opts.maxTxKeys && !literal {
		b.tx.escalateAll(s.sec.name, by, true)
		return
	}
	b.insertRevision(Revision{Key: key, Section: s.sec.name})
	s.revs++
	if literal {
		b.charge(revisionCost)
		return
	}
	b.chargeSection(s, int64(len(key))+revisionCost, true)
	b.keepBudget()
}

func (b *Builder) insertRevision(r Revision) {
	if b.revs.items == nil && b.first != nil {
		b.revs.items = b.first.revs[:0]
	}
	b.revs.insert(r)
}

// addRevisionPattern sets every existing key matching a revision pattern.
func (b *Builder) addRevisionPattern(t *Template, s *sectionState) {
	if r := (Revision{Key: t.Pattern(), Section: s.sec.name, IsPattern: true, Template: t}); !b.revs.has(r.id()) {
		b.insertRevision(r)
		b.charge(revisionCost) // the string is the template's
	}
}

// escalateRevisions replaces a section's collected revision keys by the
// revision template's pattern, as escalate does for keys. Unless forced, a
// part that held none is left as it is: it escalates when it next collects
// one.
func (b *Builder) escalateRevisions(s *sectionState, force bool) {
	name := s.sec.name
	var freed int64
	b.revs.deleteFunc(func(r Revision) bool {
		if r.Section != name || r.IsPattern || b.literalRevision(s, r.Key) {
			return false
		}
		s.revs--
		freed += int64(len(r.Key)) + revisionCost
		return true
	})
	if freed == 0 && !force {
		return
	}
	s.revEscalated = true
	b.chargeSection(s, -freed, true)
	for _, sec := range b.definitions(s) {
		if rev := sec.revision; rev != nil && !rev.IsLiteral() {
			b.addRevisionPattern(rev, s)
		}
	}
}

// literalRevision reports whether key is the section's literal revision,
// in one of its definitions: no pattern stands for it.
func (b *Builder) literalRevision(s *sectionState, key string) bool {
	if rev := s.sec.revision; rev != nil && rev.IsLiteral() && rev.Literal() == key {
		return true
	}
	for _, sec := range b.others[s.sec.name] {
		if rev := sec.revision; rev != nil && rev.IsLiteral() && rev.Literal() == key {
			return true
		}
	}
	return false
}

// escalate replaces a section's collected keys by its key patterns: memory
// per transaction stays bounded however many rows it touches. The patterns
// name the rule by. An empty by is the budget's choice: the patterns name
// the rule of the first key they replace, and a part that held none is left
// as it is: it escalates when it next collects one.
func (b *Builder) escalate(s *sectionState, by string) {
	name := s.sec.name
	var freed int64
	b.keys.deleteFunc(func(k Key) bool {
		if k.Section != name || k.From == FromLiteral {
			return false
		}
		if by == "" {
			by = k.Rule
		}
		s.keys--
		freed += int64(len(k.Key)) + keyCost
		return true
	})
	if by == "" {
		return
	}
	s.escalated = true
	b.chargeSection(s, -freed, false)
	for _, sec := range b.definitions(s) {
		for _, t := range sec.keys {
			if !t.IsLiteral() {
				b.pattern(t, s, by, ReasonEscalated, false)
			}
		}
	}
}

// definitions returns the section's definition and any other it had in the
// rules of parts merged in.
func (b *Builder) definitions(s *sectionState) []*section {
	others := b.others[s.sec.name]
	if len(others) == 0 {
		return []*section{s.sec}
	}
	return append([]*section{s.sec}, others...)
}

func (b *Builder) pattern(t *Template, s *sectionState, by, reason string, revision bool) {
	if revision {
		b.addRevisionPattern(t, s)
		return
	}
	if b.pats.add(Pattern{Pattern: t.Pattern(), Section: s.sec.name, Rule: by, Reason: reason, Template: t}) {
		b.charge(patternCost) // the string is the template's
	}
}
