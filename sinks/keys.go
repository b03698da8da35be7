package sinks

// OwnKeyPattern is a Redis glob that matches every key cdcd keeps for
// itself: the recorded state and the marker of each slot (state.go). An ACL
// user for cdcd is granted it besides the rules' keys (cdcd rules acl);
// keys cdcd adds for itself must stay under it.
const OwnKeyPattern = "cdcd:*"
