//! Subscriptions: live theta updates of one exam and the activity of a whole assessment,
//! fed by this instance's event bus (its own events first, the fleet's through Redis).

use async_graphql::{Context, ID, Result, Subscription};
use futures_util::{Stream, StreamExt, stream};

use super::types::{ExamActivity, ThetaUpdate};
use super::{caller, gql, parse_id, service};
use crate::exam::ExamStatus;
use crate::storage::events::EventKind;

/// Live events.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// One event per answer recorded in the exam, on whichever instance it was recorded
    /// (owner, proctor or admin; theta and SE per the assessment's feedback policy). The
    /// stream completes after the event with `completed: true` (or one last event when an
    /// admin abandons the exam); on an exam that has
    /// already ended it yields the final state and completes. With `includeCurrent` it
    /// starts with the exam's state now, so a reconnecting client is never blind.
    /// Delivery across instances is at-most-once: a gap in `itemsCompleted` means missed
    /// events, and `engineSummary` has the current numbers.
    async fn theta_updates(
        &self,
        ctx: &Context<'_>,
        exam_session_id: ID,
        #[graphql(default_with = "Some(false)")] include_current: Option<bool>,
    ) -> Result<impl Stream<Item = ThetaUpdate> + use<>> {
        let caller = caller(ctx).map_err(gql)?.clone();
        let id = parse_id(&exam_session_id, "examSessionId").map_err(gql)?;
        let service = service(ctx).map_err(gql)?;
        let (watched, events) = service.watch_exam(&caller, id).await.map_err(gql)?;
        let feedback = watched.feedback;
        let current = watched.now.items_completed;
        let ended = watched.status != ExamStatus::Active;
        let first = (include_current.unwrap_or(false) || ended).then_some(watched.now);
        let live = events
            .filter(move |e| {
                let answer = e.kind == EventKind::Answered && e.items_completed > current;
                std::future::ready(answer || e.kind == EventKind::Abandoned)
            })
            .boxed();
        // Ends right after the completing answer (or the abandonment), without waiting
        // for another event.
        let live = stream::unfold((live, ended), |(mut events, finished)| async move {
            if finished {
                return None;
            }
            let event = events.next().await?;
            let last = event.completed || event.kind == EventKind::Abandoned;
            Some((event, (events, last)))
        });
        Ok(stream::iter(first)
            .chain(live)
            .map(move |event| ThetaUpdate::new(event, feedback, &caller)))
    }

    /// Every exam's STARTED, ANSWERED, COMPLETED and ABANDONED events of one assessment,
    /// from every instance (admin, proctor). A completing answer sends ANSWERED then
    /// COMPLETED; a resume sends nothing.
    async fn exam_activity(
        &self,
        ctx: &Context<'_>,
        assessment_id: ID,
    ) -> Result<impl Stream<Item = ExamActivity> + use<>> {
        let caller = caller(ctx).map_err(gql)?;
        let id = parse_id(&assessment_id, "assessmentId").map_err(gql)?;
        let events = service(ctx)
            .map_err(gql)?
            .watch_assessment(caller, id)
            .await
            .map_err(gql)?;
        Ok(events.flat_map(|event| stream::iter(ExamActivity::from_event(&event))))
    }
}
