package pollconn

// RawWrap is the raw path itself, so that its tests run in every build,
// the race detector's included, where Wrap passes connections through.
var RawWrap = wrap
