//! The Leader actor: campaigns through the election backend and tells the scheduler when
//! leadership (and its fencing epoch) changes.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use tidesync_core::LeaderElector;

use crate::scheduler::LeadershipChanged;

/// Campaign now (also runs periodically).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Campaign;

/// Give leadership up (on shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Resign;

/// The Leader actor.
pub struct LeaderActor {
    elector: Arc<dyn LeaderElector>,
    notify: Recipient<LeadershipChanged>,
    every: Duration,
    current: Option<u64>,
    announced: bool,
    campaigning: bool,
}

impl LeaderActor {
    /// Campaigns with `elector` every `every`, telling `notify` about changes.
    pub fn new(
        elector: Arc<dyn LeaderElector>,
        notify: Recipient<LeadershipChanged>,
        every: Duration,
    ) -> Self {
        LeaderActor {
            elector,
            notify,
            every,
            current: None,
            announced: false,
            campaigning: false,
        }
    }

    fn campaign(&mut self, ctx: &mut Context<Self>) {
        if self.campaigning {
            return;
        }
        self.campaigning = true;
        let elector = self.elector.clone();
        ctx.spawn(actix::fut::wrap_future::<_, Self>(async move { elector.campaign().await }).map(
            |result, act, _ctx| {
                act.campaigning = false;
                let epoch = match result {
                    Ok(epoch) => epoch,
                    Err(err) => {
                        tracing::warn!(error = %err, elector = act.elector.name(), "election failed; acting as follower");
                        None
                    }
                };
                // The first result is always announced: the scheduler waits for it.
                if epoch != act.current || !act.announced {
                    act.announced = true;
                    act.current = epoch;
                    act.notify.do_send(LeadershipChanged { leader: epoch.is_some(), epoch });
                }
            },
        ));
    }
}

impl Actor for LeaderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.campaign(ctx);
        ctx.run_interval(self.every, |act, ctx| act.campaign(ctx));
    }
}

impl Handler<Campaign> for LeaderActor {
    type Result = ();

    fn handle(&mut self, _msg: Campaign, ctx: &mut Context<Self>) {
        self.campaign(ctx);
    }
}

impl Handler<Resign> for LeaderActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Resign, _ctx: &mut Context<Self>) -> Self::Result {
        let elector = self.elector.clone();
        Box::pin(
            actix::fut::wrap_future::<_, Self>(async move { elector.resign().await }).map(
                |result, act, ctx| {
                    if let Err(err) = result {
                        tracing::warn!(error = %err, "resigning leadership failed");
                    }
                    if act.current.take().is_some() {
                        act.notify.do_send(LeadershipChanged {
                            leader: false,
                            epoch: None,
                        });
                    }
                    ctx.stop();
                },
            ),
        )
    }
}
