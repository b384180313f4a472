//! Subscriptions: live theta updates, fed by the instance's Redis pub/sub listener.

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::{Stream, StreamExt};

use super::types::ThetaUpdate;
use super::{caller, gql, parse_id, service};

/// Live events.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// One event per answer recorded in the exam, on whichever instance it was recorded
    /// (owner, proctor or admin; theta and SE per the assessment's feedback policy). Delivery is at-most-once: a gap in `itemsCompleted` means missed
    /// events, and `engineSummary` has the current numbers.
    async fn theta_updates(
        &self,
        ctx: &Context<'_>,
        exam_session_id: ID,
    ) -> Result<impl Stream<Item = ThetaUpdate> + use<>> {
        let caller = caller(ctx).map_err(gql)?;
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let service = service(ctx).map_err(gql)?;
        let feedback = service.authorize_exam(caller, id).await.map_err(gql)?;
        let caller = caller.clone();
        Ok(service
            .events()
            .subscribe(id)
            .map(move |event| ThetaUpdate::new(event, feedback, &caller)))
    }
}
