package admission

import "reflect"

// Strictest is the tightest of several limits, field by field: the
// smallest non-zero value, 0 (unlimited) only when every one is 0. A
// request acting for several namespaces runs under it, so naming a
// namespace together with another never escapes that namespace's own
// limits. Fields that are not numbers keep the first value.
func Strictest(ls ...Limits) Limits {
	if len(ls) == 0 {
		return Limits{}
	}
	out := ls[0]
	ov := reflect.ValueOf(&out).Elem()
	for _, l := range ls[1:] {
		lv := reflect.ValueOf(l)
		for i := range ov.NumField() {
			f := ov.Field(i)
			switch f.Kind() {
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				if v := lv.Field(i).Int(); v != 0 && (f.Int() == 0 || v < f.Int()) {
					f.SetInt(v)
				}
			case reflect.Float32, reflect.Float64:
				if v := lv.Field(i).Float(); v != 0 && (f.Float() == 0 || v < f.Float()) {
					f.SetFloat(v)
				}
			}
		}
	}
	return out
}

// ForAll returns the limits of a request acting for several namespaces:
// an entry under tenant (their joined name) when there is one, else the
// strictest of each namespace's own limits.
func (c *Config) ForAll(tenant string, namespaces []string) Limits {
	if c.Configured(tenant) || len(namespaces) == 0 {
		return c.For(tenant)
	}
	ls := make([]Limits, 0, len(namespaces))
	for _, ns := range namespaces {
		ls = append(ls, c.For(ns))
	}
	return Strictest(ls...)
}
