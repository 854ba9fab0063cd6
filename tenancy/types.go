package tenancy

import (
	"maps"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Identity of the MetricAccess resource in the Kubernetes API.
const (
	GroupName = "observability.ethos.io"
	Version   = "v1alpha1"
	Kind      = "MetricAccess"
	ListKind  = "MetricAccessList"
	Resource  = "metricaccesses"
)

var (
	// GroupVersion is the API group and version of MetricAccess.
	GroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}
	// SchemeGroupVersion is the name client-go code generators expect.
	SchemeGroupVersion = GroupVersion
	// GroupVersionResource addresses MetricAccess objects in dynamic clients.
	GroupVersionResource = GroupVersion.WithResource(Resource)

	// SchemeBuilder registers MetricAccess and MetricAccessList in a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this group to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// APIVersion is the apiVersion string every MetricAccess object carries.
func APIVersion() string { return GroupVersion.String() }

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MetricAccess{}, &MetricAccessList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// MetricAccess grants the namespace it lives in read access to the series of
// spec.source that match spec.metrics (and spec.labelSelectors).
type MetricAccess struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MetricAccessSpec   `json:"spec"`
	Status MetricAccessStatus `json:"status,omitempty"`
}

// MetricAccessSpec is what the object grants.
type MetricAccessSpec struct {
	// Metrics holds one pattern per entry: a metric name, a PromQL selector
	// or an RE2 regex on the metric name.
	Metrics []string `json:"metrics"`
	// Source is the namespace whose series are granted.
	Source string `json:"source"`
	// LabelSelectors narrow every entry further: each k: v adds k="v".
	LabelSelectors map[string]string `json:"labelSelectors,omitempty"`
}

// MetricAccessStatus is written back by the Kubernetes watcher.
type MetricAccessStatus struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
	ValidatedMetrics   int                `json:"validatedMetrics"`
}

// MetricAccessList is the list form the API server returns.
type MetricAccessList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []MetricAccess `json:"items"`
}

// DeepCopyInto copies the spec into out; out must not share maps or slices.
func (in *MetricAccessSpec) DeepCopyInto(out *MetricAccessSpec) {
	*out = *in
	out.Metrics = slices.Clone(in.Metrics)
	out.LabelSelectors = maps.Clone(in.LabelSelectors)
}

// DeepCopy returns an independent copy of the spec.
func (in *MetricAccessSpec) DeepCopy() *MetricAccessSpec {
	if in == nil {
		return nil
	}
	out := new(MetricAccessSpec)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies the status into out.
func (in *MetricAccessStatus) DeepCopyInto(out *MetricAccessStatus) {
	*out = *in
	if in.Conditions != nil {
		out.Conditions = make([]metav1.Condition, len(in.Conditions))
		for i := range in.Conditions {
			in.Conditions[i].DeepCopyInto(&out.Conditions[i])
		}
	}
}

// DeepCopy returns an independent copy of the status.
func (in *MetricAccessStatus) DeepCopy() *MetricAccessStatus {
	if in == nil {
		return nil
	}
	out := new(MetricAccessStatus)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies the object into out.
func (in *MetricAccess) DeepCopyInto(out *MetricAccess) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	in.Spec.DeepCopyInto(&out.Spec)
	in.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns an independent copy of the object.
func (in *MetricAccess) DeepCopy() *MetricAccess {
	if in == nil {
		return nil
	}
	out := new(MetricAccess)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *MetricAccess) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies the list into out.
func (in *MetricAccessList) DeepCopyInto(out *MetricAccessList) {
	*out = *in
	out.TypeMeta = in.TypeMeta
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]MetricAccess, len(in.Items))
		for i := range in.Items {
			in.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns an independent copy of the list.
func (in *MetricAccessList) DeepCopy() *MetricAccessList {
	if in == nil {
		return nil
	}
	out := new(MetricAccessList)
	in.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (in *MetricAccessList) DeepCopyObject() runtime.Object {
	if c := in.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// Key names the object the way problems and rule origins do: "namespace/name".
func (in *MetricAccess) Key() string {
	if in == nil {
		return "<nil>"
	}
	return in.Namespace + "/" + in.Name
}
