package bgp

import (
	"fmt"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/rs/zerolog"
)

// gobgpLogger routes GoBGP's logs to zerolog. GoBGP logs every session step
// at info level; the speaker logs transitions itself (event=bgp_peer_state),
// so GoBGP's info drops to debug and its debug to trace.
type gobgpLogger struct {
	log zerolog.Logger
}

var _ gobgplog.Logger = (*gobgpLogger)(nil)

func (l *gobgpLogger) emit(e *zerolog.Event, msg string, fields gobgplog.Fields) {
	if e == nil {
		return
	}
	e = e.Str("source", "gobgp")
	for k, v := range fields {
		switch v := v.(type) {
		case string:
			e = e.Str(k, v)
		case error:
			e = e.AnErr(k, v)
		case fmt.Stringer:
			e = e.Stringer(k, v)
		default:
			e = e.Interface(k, v)
		}
	}
	e.Msg(msg)
}

// Panic logs at error level; the speaker does not let GoBGP crash the
// process through its logger.
func (l *gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Error(), msg, fields)
}

// Fatal logs at error level (GoBGP uses it only for its gRPC listener,
// which the speaker does not start).
func (l *gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Error(), msg, fields)
}

// Error logs at error level.
func (l *gobgpLogger) Error(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Error(), msg, fields)
}

// Warn logs at warn level.
func (l *gobgpLogger) Warn(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Warn(), msg, fields)
}

// Info logs at debug level.
func (l *gobgpLogger) Info(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Debug(), msg, fields)
}

// Debug logs at trace level.
func (l *gobgpLogger) Debug(msg string, fields gobgplog.Fields) {
	l.emit(l.log.Trace(), msg, fields)
}

// SetLevel is ignored: the zerolog logger's level rules.
func (l *gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel maps the zerolog level to GoBGP's so GoBGP skips building
// messages nobody will see.
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel {
	lv := l.log.GetLevel()
	if g := zerolog.GlobalLevel(); g > lv {
		lv = g
	}
	switch {
	case lv <= zerolog.TraceLevel:
		return gobgplog.DebugLevel
	case lv <= zerolog.DebugLevel:
		return gobgplog.InfoLevel
	case lv <= zerolog.WarnLevel:
		return gobgplog.WarnLevel
	default:
		return gobgplog.ErrorLevel
	}
}
