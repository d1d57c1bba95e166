package sqlscan

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Walk visits m (a pg_query parse tree node) and, depth first, every
// message below it. visit returns false to skip the children of the
// message it was given.
func Walk(m proto.Message, visit func(proto.Message) bool) { walk(m, visit) }

func walk(m proto.Message, visit func(proto.Message) bool) {
	if m == nil {
		return
	}
	walkReflect(m.ProtoReflect(), visit)
}

func walkReflect(m protoreflect.Message, visit func(proto.Message) bool) {
	if !m.IsValid() {
		return
	}
	if !visit(m.Interface()) {
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			// pg_query's tree has no maps.
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkReflect(l.Get(i).Message(), visit)
			}
		case fd.Message() != nil:
			walkReflect(v.Message(), visit)
		}
		return true
	})
}
