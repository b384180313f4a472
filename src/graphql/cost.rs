//! The field budget of an operation: how many fields it would resolve once every fragment
//! spread is expanded, and the schema extension that refuses documents over the budget
//! with `QUERY_TOO_COMPLEX` before they are validated or executed.
//!
//! It owns only that count and that refusal. It must not walk an expanded document (the
//! whole point is that expansion can be exponential: `...F` twice per fragment doubles
//! per level), must not recurse without bound on client input, and must not validate:
//! unknown fields, types and the other rules stay with async-graphql's validation, which
//! runs after this check and only on documents that passed it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
};
use async_graphql::parser::types::{
    ExecutableDocument, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{
    ErrorExtensionValues, Name, Pos, Positioned, Request, ServerError, ServerResult, Variables,
};

/// Default largest number of fields one operation may resolve after fragment expansion.
///
/// GraphiQL's full introspection query (graphql-js 16 with every option on) counts 212,
/// so this leaves it ten times the room, while a fragment bomb (about 2^22 fields in
/// 1.2 KB) is far over it.
pub const DEFAULT_MAX_FIELDS: usize = 2_000;

/// The `extensions.code` of a document refused for resolving too many fields.
pub const QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";

/// Why a document has no finite field count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostError {
    /// A fragment spreads itself, directly or through other fragments: expansion never ends.
    FragmentCycle {
        /// The fragment found spreading itself.
        fragment: String,
        /// Where it is spread.
        pos: Pos,
    },
    /// A spread names a fragment the document does not define.
    UnknownFragment {
        /// The name spread.
        fragment: String,
        /// Where it is spread.
        pos: Pos,
    },
}

/// The number of fields an operation of `document` resolves after fragment expansion,
/// counting every field (`__typename` too), in time linear in the document's size.
///
/// The operation counted is the one named `operation_name` when the document has it,
/// otherwise the largest one. `@skip`/`@include` are ignored (an upper bound). The count
/// saturates at `usize::MAX`.
pub fn executed_fields(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Result<usize, CostError> {
    counted_operation(document, operation_name).map(|(fields, _)| fields)
}

/// [`executed_fields`], with where the operation counted starts.
fn counted_operation(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Result<(usize, Option<Pos>), CostError> {
    let mut counter = Counter::new(&document.fragments);
    let named = operation_name.and_then(|name| {
        document
            .operations
            .iter()
            .find(|(op_name, _)| op_name.is_some_and(|n| n.as_str() == name))
    });
    match named {
        Some((_, operation)) => Ok((counter.operation(&operation.node)?, Some(operation.pos))),
        None => {
            let mut largest = (0, None);
            for (_, operation) in document.operations.iter() {
                let fields = counter.operation(&operation.node)?;
                if largest.1.is_none() || fields > largest.0 {
                    largest = (fields, Some(operation.pos));
                }
            }
            Ok(largest)
        }
    }
}

/// Checks `document` against `max_fields`: the count, or the error a client should see.
pub fn check(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    max_fields: usize,
) -> Result<usize, ServerError> {
    let (fields, pos) =
        counted_operation(document, operation_name).map_err(|error| refusal(error, max_fields))?;
    if fields > max_fields {
        let count = if fields == usize::MAX {
            format!("at least {fields}")
        } else {
            fields.to_string()
        };
        return Err(coded(
            format!(
                "the operation would resolve {count} fields after fragment expansion; \
                 the limit is {max_fields}"
            ),
            pos,
            QUERY_TOO_COMPLEX,
        ));
    }
    Ok(fields)
}

/// The error a client sees for a document without a finite count.
fn refusal(error: CostError, max_fields: usize) -> ServerError {
    match error {
        CostError::FragmentCycle { fragment, pos } => coded(
            format!(
                "fragment \"{fragment}\" spreads itself, so the operation would expand without \
                 end; the limit is {max_fields} fields"
            ),
            Some(pos),
            QUERY_TOO_COMPLEX,
        ),
        // What validation would say, with the code the HTTP handler gives validation errors.
        CostError::UnknownFragment { fragment, pos } => coded(
            format!("Unknown fragment: \"{fragment}\""),
            Some(pos),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    }
}

/// A `ServerError` carrying `extensions.code`.
fn coded(message: String, pos: Option<Pos>, code: &str) -> ServerError {
    let mut error = ServerError::new(message, pos);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// The schema extension refusing operations that resolve more than a number of fields.
///
/// It checks in the `parse_query` hook, which async-graphql runs for every request (HTTP
/// queries and mutations, WebSocket subscriptions) before validation — also when the
/// request already carries a parsed document ([`super::DocumentCache`]): `prepare_request`
/// in async-graphql 7.2.1 wraps "take the parsed document, or parse the text" in the
/// extensions' `parse_query`, so a cached bomb is checked like a fresh one and never
/// reaches validation or execution.
#[derive(Clone, Copy, Debug)]
pub struct FieldLimit {
    max_fields: usize,
}

impl FieldLimit {
    /// An extension refusing operations that resolve more than `max_fields` fields.
    pub fn new(max_fields: usize) -> Self {
        Self { max_fields }
    }
}

impl ExtensionFactory for FieldLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(FieldLimitExtension {
            max_fields: self.max_fields,
            operation_name: Mutex::new(None),
        })
    }
}

/// One request's instance (async-graphql creates extensions per request).
struct FieldLimitExtension {
    max_fields: usize,
    /// The request's `operationName`, seen in `prepare_request` (which runs before
    /// `parse_query`), so that only the operation that will run is counted.
    operation_name: Mutex<Option<String>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for FieldLimitExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        *self
            .operation_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = request.operation_name.clone();
        Ok(request)
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let operation_name = self
            .operation_name
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        check(&document, operation_name.as_deref(), self.max_fields)?;
        Ok(document)
    }
}

/// What a selection set holds without expanding spreads: its fields (at any depth) and
/// the spreads found among them.
struct Shallow<'a> {
    fields: usize,
    spreads: Vec<(&'a str, Pos)>,
}

/// Walks `set` with an explicit stack (nesting is bounded by the parser's recursion limit
/// anyway); a field counts 1 plus its sub-selection, and since that sum is the same
/// wherever a spread sits, a set's count is its own fields plus its spreads' counts.
fn shallow(set: &SelectionSet) -> Shallow<'_> {
    let mut fields = 0usize;
    let mut spreads = Vec::new();
    let mut stack = vec![set];
    while let Some(set) = stack.pop() {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    fields = fields.saturating_add(1);
                    stack.push(&field.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    spreads.push((spread.node.fragment_name.node.as_str(), spread.pos));
                }
                Selection::InlineFragment(inline) => stack.push(&inline.node.selection_set.node),
            }
        }
    }
    Shallow { fields, spreads }
}

/// Memoized fragment counts of one document.
struct Counter<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// `None` while the fragment is being counted (on the current path), then its count.
    counts: HashMap<&'a str, Option<usize>>,
}

enum Step<'a> {
    /// Count this fragment (spread at `Pos`) unless it already is.
    Enter(&'a str, Pos),
    /// Every spread of this fragment is counted: sum them.
    Exit(&'a str, Shallow<'a>),
}

impl<'a> Counter<'a> {
    fn new(fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>) -> Self {
        Self {
            fragments,
            counts: HashMap::new(),
        }
    }

    fn operation(&mut self, operation: &'a OperationDefinition) -> Result<usize, CostError> {
        let own = shallow(&operation.selection_set.node);
        self.sum(&own)
    }

    /// `set`'s fields plus the counts of its spreads, counting those not yet counted.
    fn sum(&mut self, set: &Shallow<'a>) -> Result<usize, CostError> {
        let mut total = set.fields;
        for &(name, pos) in &set.spreads {
            total = total.saturating_add(self.fragment(name, pos)?);
        }
        Ok(total)
    }

    /// The count of fragment `root`: a depth-first walk over fragments with an explicit
    /// stack (a chain of a thousand fragments must not overflow the stack), each fragment
    /// entered once, so the work is linear in the document.
    fn fragment(&mut self, root: &'a str, root_pos: Pos) -> Result<usize, CostError> {
        if let Some(Some(count)) = self.counts.get(root) {
            return Ok(*count);
        }
        let mut stack = vec![Step::Enter(root, root_pos)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(name, pos) => match self.counts.get(name) {
                    Some(Some(_)) => {}
                    // Entered again before its exit: it is its own descendant.
                    Some(None) => return Err(cycle(name, pos)),
                    None => {
                        let definition =
                            self.fragments
                                .get(name)
                                .ok_or_else(|| CostError::UnknownFragment {
                                    fragment: name.to_owned(),
                                    pos,
                                })?;
                        let own = shallow(&definition.node.selection_set.node);
                        self.counts.insert(name, None);
                        let spreads = own.spreads.clone();
                        stack.push(Step::Exit(name, own));
                        for (spread, spread_pos) in spreads.into_iter().rev() {
                            stack.push(Step::Enter(spread, spread_pos));
                        }
                    }
                },
                Step::Exit(name, own) => {
                    // Every spread of `name` was entered above its exit, so each is counted.
                    let mut total = own.fields;
                    for (spread, pos) in &own.spreads {
                        match self.counts.get(spread) {
                            Some(Some(count)) => total = total.saturating_add(*count),
                            _ => return Err(cycle(spread, *pos)),
                        }
                    }
                    self.counts.insert(name, Some(total));
                }
            }
        }
        match self.counts.get(root) {
            Some(Some(count)) => Ok(*count),
            _ => Err(cycle(root, root_pos)),
        }
    }
}

fn cycle(fragment: &str, pos: Pos) -> CostError {
    CostError::FragmentCycle {
        fragment: fragment.to_owned(),
        pos,
    }
}

#[cfg(test)]
mod tests {

    use async_graphql::parser::parse_query;

    use super::*;
    use crate::graphql::{Limits, build_schema};

    /// `query{...F1}` with fragments `F1`..`F{levels}`, each spreading the next twice.
    fn bomb(levels: usize) -> String {
        let mut doc = String::from("query{...F1}");
        for i in 1..levels {
            let next = i + 1;
            doc.push_str(&format!(
                " fragment F{i} on Query{{...F{next} a{i}:__typename ...F{next}}}"
            ));
        }
        doc.push_str(&format!(" fragment F{levels} on Query{{__typename}}"));
        doc
    }

    fn count(query: &str) -> Result<usize, CostError> {
        executed_fields(&parse_query(query).expect("parses"), None)
    }

    /// graphql-js 16's `getIntrospectionQuery` with every option on (descriptions,
    /// specifiedByUrl, directiveIsRepeatable, schemaDescription, inputValueDeprecation,
    /// oneOf): the largest introspection query GraphiQL sends.
    const INTROSPECTION: &str = r"
        query IntrospectionQuery {
          __schema {
            description
            queryType { name kind }
            mutationType { name kind }
            subscriptionType { name kind }
            types { ...FullType }
            directives {
              name
              description
              isRepeatable
              locations
              args(includeDeprecated: true) { ...InputValue }
            }
          }
        }
        fragment FullType on __Type {
          kind
          name
          description
          specifiedByURL
          isOneOf
          fields(includeDeprecated: true) {
            name
            description
            args(includeDeprecated: true) { ...InputValue }
            type { ...TypeRef }
            isDeprecated
            deprecationReason
          }
          inputFields(includeDeprecated: true) { ...InputValue }
          interfaces { ...TypeRef }
          enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
          possibleTypes { ...TypeRef }
        }
        fragment InputValue on __InputValue {
          name
          description
          type { ...TypeRef }
          defaultValue
          isDeprecated
          deprecationReason
        }
        fragment TypeRef on __Type {
          kind name
          ofType { kind name ofType { kind name ofType { kind name ofType { kind name
          ofType { kind name ofType { kind name ofType { kind name ofType { kind name
          } } } } } } } }
        }";

    #[test]
    fn a_plain_query_counts_exactly_its_fields() {
        assert_eq!(count("{ a { b c } d }"), Ok(4));
        assert_eq!(count("{ __typename }"), Ok(1));
        assert_eq!(count("{ a(x: 1) { b { c { d } } } }"), Ok(4));
    }

    #[test]
    fn fragments_and_inline_fragments_are_expanded() {
        // F = 3 (b, c, d), spread twice, plus a and e.
        assert_eq!(
            count("{ a { ...F } e { ...F } } fragment F on T { b c { d } }"),
            Ok(2 + 3 + 3)
        );
        assert_eq!(count("{ a { ... on T { b c } ... { d } } }"), Ok(4));
        // A fragment spread inside an inline fragment inside a fragment.
        assert_eq!(
            count(
                "{ ...A ...A } fragment A on Query { x { ... on T { ...B } } } \
                 fragment B on T { y z }"
            ),
            Ok(2 * (1 + 2))
        );
        // A chain deeper than any call stack would like is counted without recursion.
        let mut chain = String::from("{ ...F0 }");
        for i in 0..5_000 {
            chain.push_str(&format!(
                " fragment F{i} on Query {{ a{i}: __typename ...F{} }}",
                i + 1
            ));
        }
        chain.push_str(" fragment F5000 on Query { __typename }");
        assert_eq!(count(&chain), Ok(5_001));
    }

    #[test]
    fn the_operation_named_is_the_one_counted() {
        let doc = parse_query("query Small { a } query Big { a b c }").expect("parses");
        assert_eq!(executed_fields(&doc, Some("Small")), Ok(1));
        assert_eq!(executed_fields(&doc, Some("Big")), Ok(3));
        assert_eq!(executed_fields(&doc, None), Ok(3));
    }

    #[test]
    fn the_fragment_bomb_is_counted_without_expansion_and_refused() {
        let document = parse_query(bomb(22)).expect("parses");
        let fields = executed_fields(&document, None).expect("finite");
        // count(F22) = 1 and count(Fk) = 2 count(Fk+1) + 1, so count(F1) = 2^22 - 1.
        assert_eq!(fields, (1 << 22) - 1);
        let error = check(&document, None, DEFAULT_MAX_FIELDS).expect_err("refused");
        assert!(
            error
                .message
                .contains(&format!("would resolve {fields} fields")),
            "{}",
            error.message
        );
        assert_eq!(code(&error), QUERY_TOO_COMPLEX);
        // 200 levels would be 2^200 fields: expanding them would never end; the memoized
        // count saturates.
        let fields = count(&bomb(200));
        assert_eq!(fields, Ok(usize::MAX));
    }

    #[test]
    fn a_fragment_cycle_does_not_hang_and_is_refused() {
        let doc = "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
        assert!(matches!(count(doc), Err(CostError::FragmentCycle { .. })));
        assert!(matches!(
            count("{ ...A } fragment A on Query { x ...A }"),
            Err(CostError::FragmentCycle { .. })
        ));
        let error = check(&parse_query(doc).expect("parses"), None, DEFAULT_MAX_FIELDS)
            .expect_err("refused");
        assert_eq!(code(&error), QUERY_TOO_COMPLEX);
        // A diamond (two paths to one fragment) is not a cycle.
        assert_eq!(
            count(
                "{ ...A } fragment A on Query { ...B ...C } fragment B on Query { ...D } \
                 fragment C on Query { ...D } fragment D on Query { x }"
            ),
            Ok(2)
        );
    }

    #[test]
    fn an_unknown_fragment_is_refused_as_validation_would() {
        assert!(matches!(
            count("{ ...Nope }"),
            Err(CostError::UnknownFragment { .. })
        ));
        let error =
            check(&parse_query("{ ...Nope }").expect("parses"), None, 10).expect_err("refused");
        assert_eq!(code(&error), "GRAPHQL_VALIDATION_FAILED");
    }

    #[test]
    fn the_introspection_query_fits_well_under_the_default() {
        let fields = count(INTROSPECTION).expect("finite");
        assert_eq!(fields, 212);
        assert!(fields * 5 < DEFAULT_MAX_FIELDS);
        assert_eq!(Limits::default().max_fields, DEFAULT_MAX_FIELDS);
    }

    #[tokio::test]
    async fn the_schema_runs_introspection_and_refuses_a_bomb_even_pre_parsed() {
        let schema = build_schema(None, Limits::default());
        let response = schema.execute(INTROSPECTION).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);

        // As the HTTP handler's document cache hands it over: already parsed.
        let text = bomb(22);
        let mut request = async_graphql::Request::new(text.clone());
        request.set_parsed_query(parse_query(&text).expect("parses"));
        let response = schema.execute(request).await;
        assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
        assert_eq!(code(&response.errors[0]), QUERY_TOO_COMPLEX);

        // And as text.
        let response = schema.execute(text.as_str()).await;
        assert_eq!(code(&response.errors[0]), QUERY_TOO_COMPLEX);

        // Only the operation named counts.
        let wide: String = (0..2_500).map(|i| format!("a{i}: __typename ")).collect();
        let doc = format!("query Small {{ __typename }} query Wide {{ {wide} }}");
        let response = schema
            .execute(async_graphql::Request::new(doc.clone()).operation_name("Small"))
            .await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let response = schema
            .execute(async_graphql::Request::new(doc).operation_name("Wide"))
            .await;
        assert_eq!(code(&response.errors[0]), QUERY_TOO_COMPLEX);
    }

    fn code(error: &ServerError) -> String {
        let value = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .cloned();
        match value {
            Some(async_graphql::Value::String(code)) => code,
            other => panic!("no code: {other:?}"),
        }
    }
}
