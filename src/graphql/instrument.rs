//! GraphQL metrics, the same over HTTP and WebSocket: every root field of a query or
//! mutation is counted by outcome (`ok` or its error code) and timed; a subscription is
//! counted once, by its first message (an error's code, or `ok`) or, when it ends before
//! sending any, as `ok`; a request refused before any root field ran (syntax, validation,
//! cost) is counted under the operation `none` with its code.
//!
//! Owns what a GraphQL request counts as in [`Metrics`]; must not change a request or its
//! response.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
    NextResolve, NextSubscribe, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection,
};
use async_graphql::{
    Request, Response, ServerError, ServerResult, ValidationResult, Value, Variables,
};
use futures_util::stream::{BoxStream, Stream};

use crate::metrics::{Metrics, OperationMetrics};

/// The code a client sees for an error: its `extensions.code`, else the one the server
/// gives code-less errors (see [`super::default_code`]).
pub fn error_code(error: &ServerError) -> &str {
    match error.extensions.as_ref().and_then(|e| e.get("code")) {
        Some(Value::String(code)) => code,
        _ => super::default_code(&error.message),
    }
}

/// The extension, installed by [`super::build_schema`] when the schema serves requests.
pub struct Instrument {
    metrics: Arc<Metrics>,
}

impl Instrument {
    /// Counts in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl ExtensionFactory for Instrument {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestInstrument {
            metrics: Arc::clone(&self.metrics),
            state: Arc::default(),
        })
    }
}

/// One request's instance (async-graphql creates extensions per request).
struct RequestInstrument {
    metrics: Arc<Metrics>,
    /// Shared with the subscription stream, which outlives the hooks' borrows.
    state: Arc<Mutex<RequestState>>,
}

/// What one request has shown so far.
#[derive(Default)]
struct RequestState {
    /// A root field of a query or mutation ran (and counted itself).
    fields_ran: bool,
    /// Executed as a stream (WebSocket): a subscription is counted by its stream.
    streaming: bool,
    /// The request's `operationName` (kept only for streams).
    operation_name: Option<String>,
    /// The subscription's root field, once the document parsed.
    subscription: Option<String>,
    /// The subscription's counters, once the document is valid.
    valid_subscription: Option<Arc<OperationMetrics>>,
    /// Whether this request was counted (a stream counts once).
    counted: bool,
}

impl RequestInstrument {
    fn state(&self) -> std::sync::MutexGuard<'_, RequestState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestInstrument {
    /// A query or mutation over HTTP: refused before any root field ran when it has errors
    /// and no field counted itself.
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let response = next.run(ctx).await;
        if let Some(error) = response.errors.first()
            && !self.state().fields_ran
        {
            self.metrics.graphql_rejected(error_code(error));
        }
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        self.state().streaming = true;
        Box::pin(CountedStream {
            inner: next.run(ctx, stream),
            state: Arc::clone(&self.state),
            metrics: Arc::clone(&self.metrics),
        })
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let request = next.run(ctx, request).await?;
        let mut state = self.state();
        if state.streaming {
            state.operation_name.clone_from(&request.operation_name);
        }
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
        let mut state = self.state();
        if state.streaming {
            state.subscription = subscription_field(&document, state.operation_name.as_deref());
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await;
        if result.is_ok() {
            let mut state = self.state();
            if let Some(field) = state.subscription.take() {
                state.valid_subscription = Some(self.metrics.operation(&field));
            }
        }
        result
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Nested fields, introspection, and the events of a subscription (resolved as
        // root fields of the subscription type) are not requests.
        if info.path_node.parent.is_some()
            || info.is_for_introspection
            || ctx.schema_env.registry.subscription_type.as_deref() == Some(info.parent_type)
        {
            return next.run(ctx, info).await;
        }
        let operation = self.metrics.operation(info.name);
        self.state().fields_ran = true;
        let started = Instant::now();
        let result = next.run(ctx, info).await;
        let outcome = result.as_ref().err().map(error_code);
        operation.observe(outcome, started.elapsed());
        result
    }
}

/// The type of the operation a request runs (the one named `name`, or the document's
/// only one) and its first root field (`None` for one that starts with a fragment).
pub fn root_field<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<(OperationType, Option<&'d str>)> {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let field =
        operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .find_map(|selection| match &selection.node {
                Selection::Field(field) => Some(field.node.name.node.as_str()),
                _ => None,
            });
    Some((operation.node.ty, field))
}

/// The root field of the subscription the request runs, when it runs one.
fn subscription_field(document: &ExecutableDocument, name: Option<&str>) -> Option<String> {
    match root_field(document, name)? {
        (OperationType::Subscription, Some(field)) => Some(field.to_owned()),
        _ => None,
    }
}

/// A streamed request (WebSocket) that counts itself once: by its first message, or when
/// it ends or is dropped before sending one.
struct CountedStream<'s> {
    inner: BoxStream<'s, Response>,
    state: Arc<Mutex<RequestState>>,
    metrics: Arc<Metrics>,
}

impl CountedStream<'_> {
    /// Counts the request with `first`, its first message (`None`: it sent none).
    fn count(&self, first: Option<&Response>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::replace(&mut state.counted, true) || state.fields_ran {
            return; // counted already, or a query or mutation whose fields counted
        }
        let error = first.and_then(|response| response.errors.first());
        match (&state.valid_subscription, error) {
            (Some(subscription), error) => subscription.count(error.map(error_code)),
            (None, Some(error)) => self.metrics.graphql_rejected(error_code(error)),
            (None, None) => {}
        }
    }
}

impl Stream for CountedStream<'_> {
    type Item = Response;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        let polled = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(item) = &polled {
            self.count(item.as_ref());
        }
        polled
    }
}

impl Drop for CountedStream<'_> {
    fn drop(&mut self) {
        self.count(None);
    }
}
