package lineage

// The OpenLineage 2-0-2 RunEvent as pgproxy emits it: only the fields and
// facets it fills. Field order follows the spec's examples.

const (
	runEventSchemaURL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"

	schemaSQL           = "https://openlineage.io/spec/facets/1-1-0/SQLJobFacet.json#/$defs/SQLJobFacet"
	schemaJobType       = "https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json#/$defs/JobTypeJobFacet"
	schemaEngine        = "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json#/$defs/ProcessingEngineRunFacet"
	schemaParent        = "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet"
	schemaErrorMessage  = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
	schemaDocumentation = "https://openlineage.io/spec/facets/1-1-0/DocumentationDatasetFacet.json#/$defs/DocumentationDatasetFacet"
	schemaOwnership     = "https://openlineage.io/spec/facets/1-0-1/OwnershipDatasetFacet.json#/$defs/OwnershipDatasetFacet"
	schemaSchema        = "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
	schemaDataSource    = "https://openlineage.io/spec/facets/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet"
)

// Event types of a run (the spec's enum; pgproxy emits these three).
const (
	EventStart    = "START"
	EventComplete = "COMPLETE"
	EventFail     = "FAIL"
)

type runEvent struct {
	EventType string    `json:"eventType"`
	EventTime string    `json:"eventTime"`
	Run       olRun     `json:"run"`
	Job       olJob     `json:"job"`
	Inputs    []dataset `json:"inputs"`
	Outputs   []dataset `json:"outputs"`
	Producer  string    `json:"producer"`
	SchemaURL string    `json:"schemaURL"`
}

type olRun struct {
	RunID  string    `json:"runId"`
	Facets runFacets `json:"facets"`
}

type runFacets struct {
	ProcessingEngine *processingEngineFacet `json:"processing_engine,omitempty"`
	Parent           *parentFacet           `json:"parent,omitempty"`
	ErrorMessage     *errorMessageFacet     `json:"errorMessage,omitempty"`
}

type olJob struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Facets    jobFacets `json:"facets"`
}

type jobFacets struct {
	SQL     *sqlFacet     `json:"sql,omitempty"`
	JobType *jobTypeFacet `json:"jobType,omitempty"`
}

type dataset struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Facets    *datasetFacets `json:"facets,omitempty"`
}

type datasetFacets struct {
	DataSource    *dataSourceFacet    `json:"dataSource,omitempty"`
	Documentation *documentationFacet `json:"documentation,omitempty"`
	Ownership     *ownershipFacet     `json:"ownership,omitempty"`
	Schema        *schemaFacet        `json:"schema,omitempty"`
}

// facetBase carries the two fields every facet must have.
type facetBase struct {
	Producer  string `json:"_producer"`
	SchemaURL string `json:"_schemaURL"`
}

type sqlFacet struct {
	facetBase
	Query   string `json:"query"`
	Dialect string `json:"dialect"`
}

type jobTypeFacet struct {
	facetBase
	ProcessingType string `json:"processingType"`
	Integration    string `json:"integration"`
	JobType        string `json:"jobType"`
}

type processingEngineFacet struct {
	facetBase
	Version                   string `json:"version"`
	Name                      string `json:"name"`
	OpenlineageAdapterVersion string `json:"openlineageAdapterVersion,omitempty"`
}

type parentFacet struct {
	facetBase
	Run struct {
		RunID string `json:"runId"`
	} `json:"run"`
	Job struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"job"`
}

type errorMessageFacet struct {
	facetBase
	Message             string `json:"message"`
	ProgrammingLanguage string `json:"programmingLanguage"`
}

type dataSourceFacet struct {
	facetBase
	Name string `json:"name"`
	URI  string `json:"uri,omitempty"`
}

type documentationFacet struct {
	facetBase
	Description string `json:"description"`
}

type ownershipFacet struct {
	facetBase
	Owners []owner `json:"owners"`
}

type owner struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type schemaFacet struct {
	facetBase
	Fields []schemaField `json:"fields"`
}

type schemaField struct {
	Name            string `json:"name"`
	Type            string `json:"type,omitempty"`
	Description     string `json:"description,omitempty"`
	OrdinalPosition int    `json:"ordinal_position,omitempty"`
}
