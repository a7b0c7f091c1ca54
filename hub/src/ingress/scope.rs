//! What a department may read: the events it sent or that were routed to
//! one of its adapters (with only its own deliveries), the cases it is a
//! party to, the dead letters of its adapters. Everything else answers
//! `404`, as if it did not exist: a department cannot learn that another
//! department's event, case or dead letter is there. Viewers, operators
//! and admins read everything; the `ingest` shorthand, a sender only,
//! reads nothing.

use crate::auth::{Caller, Names, Principal};
use crate::cases::model::Case;
use crate::governance::Audience;
use crate::journal::{DeadLetter, StoredEvent};

/// Whether the event concerns the department: it sent it (one of its
/// sources, or through one of its adapters), or it was routed to one of
/// its adapters.
pub fn sees_event(who: &Principal, e: &StoredEvent) -> bool {
    who.reads
        && (who.sent(&e.event.source)
            || e.origin
                .as_deref()
                .is_some_and(|o| who.adapters.contains(o))
            || e.deliveries
                .iter()
                .any(|d| who.adapters.contains(&d.target)))
}

/// Keeps the department's own deliveries of an event it sees.
pub fn own_deliveries(who: &Principal, e: &mut StoredEvent) {
    e.deliveries.retain(|d| who.adapters.contains(&d.target));
}

/// Whether the department is a party to the case: one of its adapters
/// must act on it, or it reported or acted on it.
pub fn sees_case(who: &Principal, case: &Case) -> bool {
    who.reads
        && (case
            .departments
            .iter()
            .any(|d| who.adapters.contains(&d.name))
            || case.timeline.iter().any(|t| {
                who.sent(&t.source)
                    || t.department
                        .as_deref()
                        .is_some_and(|d| who.adapters.contains(d))
            }))
}

/// Whether the dead letter is one of the department's adapters'.
pub fn sees_dead_letter(who: &Principal, d: &DeadLetter) -> bool {
    who.reads && who.adapters.contains(&d.target)
}

/// How `caller` reads `e`'s personal information: a department in the
/// clear what it sent itself, and what reached it as its adapters
/// received it; everyone else as viewers do.
pub fn audience<'a>(caller: &'a Caller, e: &StoredEvent) -> Audience<'a> {
    match caller.department() {
        None => Audience::Viewers,
        Some(who)
            if who.sent(&e.event.source)
                || e.origin
                    .as_deref()
                    .is_some_and(|o| who.adapters.contains(o)) =>
        {
            Audience::Clear
        }
        Some(who) => match &who.adapters {
            Names::Some(list) => Audience::Adapters(list),
            Names::All => Audience::Viewers,
        },
    }
}
