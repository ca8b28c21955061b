//! The dead letters of Part C's two topics, listed, shown and replayed
//! (`streaming_kafka dlq list | show ID | replay ID | replay-all`), with
//! [`DeadLetters`] for [`KafkaTransport`]: its crate docs say what an id is
//! (`<partition>-<offset>` in the dead-letter topic) and how a replay is
//! recorded (a marker in `<topic>.dlq.replayed`, so a replayed dead letter
//! is no longer listed).
//!
//! An id names a record of one dead-letter topic, so the same id can exist
//! in both: [`find`] and [`replay`] refuse it then, and `--topic`
//! ([`targets`]) chooses.

use std::fmt;

use campusfood_core::config::KafkaConfig;
use campusfood_core::transport::{DeadLetter, DeadLetters, Route};
use campusfood_kafka::KafkaTransport;

use super::StreamingError;

/// A topic of Part C whose dead letters are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqTarget {
    /// The topic the dead letters came from (`order-events`).
    pub topic: String,
    /// Its dead-letter topic (`order-events.dlq`).
    pub dead_letters: String,
    /// The route that reaches the topic.
    pub route: Route,
}

impl DlqTarget {
    fn new(topic: &str, route: Route) -> Self {
        Self {
            topic: topic.to_owned(),
            dead_letters: KafkaTransport::dead_letter_topic(topic),
            route,
        }
    }
}

/// The topics `--topic` selects: both (the order topic first) for `None`,
/// else the order or the inventory topic, named as itself or as its
/// dead-letter topic (`order-events` or `order-events.dlq`).
///
/// # Errors
/// [`StreamingError::Invalid`] for any other name.
pub fn targets(
    config: &KafkaConfig,
    topic: Option<&str>,
) -> Result<Vec<DlqTarget>, StreamingError> {
    let all = [
        DlqTarget::new(&config.order_topic, Route::ORDER_PLACED),
        DlqTarget::new(&config.inventory_topic, Route::INVENTORY_RESERVED),
    ];
    let Some(name) = topic else {
        return Ok(all.to_vec());
    };
    let chosen: Vec<DlqTarget> = all
        .iter()
        .filter(|t| t.topic == name || t.dead_letters == name)
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(StreamingError::Invalid {
            name: "--topic",
            reason: format!(
                "{name:?} is neither {} nor {} (nor their .dlq topics)",
                all[0].topic, all[1].topic
            ),
        });
    }
    Ok(chosen)
}

/// The pending dead letters of one dead-letter topic; displayed as a
/// heading and one line per dead letter (id, attempts, reason, body).
#[derive(Debug, Clone)]
pub struct Listing {
    /// Where they are.
    pub target: DlqTarget,
    /// Oldest first.
    pub letters: Vec<DeadLetter>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} dead letter(s) on {}",
            self.letters.len(),
            self.target.dead_letters
        )?;
        for d in &self.letters {
            writeln!(
                f,
                "{}\tattempts={}\t{}\t{}",
                d.id,
                d.attempts,
                d.reason,
                String::from_utf8_lossy(&d.message.body)
            )?;
        }
        Ok(())
    }
}

/// One dead letter in full, displayed field by field.
#[derive(Debug, Clone)]
pub struct Shown {
    /// Where it is.
    pub target: DlqTarget,
    /// The dead letter.
    pub letter: DeadLetter,
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.letter;
        writeln!(f, "id:       {}", d.id)?;
        writeln!(f, "topic:    {}", self.target.dead_letters)?;
        writeln!(f, "route:    {}", d.route)?;
        writeln!(f, "reason:   {}", d.reason)?;
        writeln!(f, "attempts: {}", d.attempts)?;
        writeln!(f, "key:      {:?}", d.message.key)?;
        writeln!(f, "headers:  {:?}", d.message.headers)?;
        writeln!(f, "body:     {}", String::from_utf8_lossy(&d.message.body))
    }
}

/// The pending dead letters of each target, at most `limit` each.
///
/// # Errors
/// [`StreamingError::Transport`] when Kafka does not answer.
pub async fn list(
    transport: &KafkaTransport,
    targets: &[DlqTarget],
    limit: usize,
) -> Result<Vec<Listing>, StreamingError> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let letters = transport.dead_letters(&target.route, limit).await?;
        out.push(Listing {
            target: target.clone(),
            letters,
        });
    }
    Ok(out)
}

/// The pending dead letter `id` among `targets`.
///
/// # Errors
/// [`StreamingError::Invalid`] when no target has it, or more than one
/// does (choose with `--topic`); [`StreamingError::Transport`] when Kafka
/// does not answer.
pub async fn find(
    transport: &KafkaTransport,
    targets: &[DlqTarget],
    id: &str,
) -> Result<Shown, StreamingError> {
    let mut found = Vec::new();
    for target in targets {
        if let Some(letter) = transport.dead_letter(&target.route, id).await? {
            found.push(Shown {
                target: target.clone(),
                letter,
            });
        }
    }
    let names = || {
        targets
            .iter()
            .map(|t| t.dead_letters.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(StreamingError::Invalid {
            name: "ID",
            reason: format!("no pending dead letter {id} on {}", names()),
        }),
        _ => Err(StreamingError::Invalid {
            name: "ID",
            reason: format!("{id} is pending on {}: choose one with --topic", names()),
        }),
    }
}

/// Replays the pending dead letter `id` (found as by [`find`]) to the topic
/// it came from, and returns where it was.
///
/// # Errors
/// As [`find`]; also [`StreamingError::Invalid`] when someone else replayed
/// it meanwhile.
pub async fn replay(
    transport: &KafkaTransport,
    targets: &[DlqTarget],
    id: &str,
) -> Result<DlqTarget, StreamingError> {
    let Shown { target, .. } = find(transport, targets, id).await?;
    if transport.replay(&target.route, id).await? {
        Ok(target)
    } else {
        Err(StreamingError::Invalid {
            name: "ID",
            reason: format!("{id} on {} was replayed meanwhile", target.dead_letters),
        })
    }
}

/// Replays every pending dead letter of each target; how many per target.
///
/// # Errors
/// [`StreamingError::Transport`] when Kafka fails; what was replayed before
/// stays replayed.
pub async fn replay_all(
    transport: &KafkaTransport,
    targets: &[DlqTarget],
) -> Result<Vec<(DlqTarget, usize)>, StreamingError> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        let n = transport.replay_all(&target.route).await?;
        out.push((target.clone(), n));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_chooses_by_name_or_dead_letter_name() {
        let config = KafkaConfig::default();
        let both = targets(&config, None).unwrap();
        assert_eq!(
            both.iter()
                .map(|t| t.dead_letters.as_str())
                .collect::<Vec<_>>(),
            ["order-events.dlq", "inventory-events.dlq"]
        );
        for name in ["inventory-events", "inventory-events.dlq"] {
            let one = targets(&config, Some(name)).unwrap();
            assert_eq!(one, [both[1].clone()]);
        }
        assert!(matches!(
            targets(&config, Some("orders")),
            Err(StreamingError::Invalid {
                name: "--topic",
                ..
            })
        ));
    }
}
