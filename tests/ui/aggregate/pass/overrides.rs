//! `name` and `snapshot_version`, an enum state, keys split over two attributes, public methods in
//! another `impl` block, and command, event and error types written as paths and generic types.
use annals::Aggregate;

mod events {
    #[derive(annals::Event, Debug, PartialEq)]
    pub enum DoorEvent {
        Opened,
        Closed,
    }
}

#[derive(Aggregate, Default, Debug, PartialEq)]
#[aggregate(name = "door", snapshot_version = 4)]
#[aggregate(command = Vec<bool>, event = crate::events::DoorEvent, error = std::io::Error)]
enum Door {
    #[default]
    Closed,
    Open,
}

mod logic {
    use super::events::DoorEvent;
    use super::Door;

    impl Door {
        pub(crate) fn handle(&self, opens: Vec<bool>) -> Result<Vec<DoorEvent>, std::io::Error> {
            if opens.is_empty() {
                return Err(std::io::Error::other("nothing to do"));
            }
            Ok(opens.into_iter().map(|open| if open { DoorEvent::Opened } else { DoorEvent::Closed }).collect())
        }

        pub(crate) fn apply(&mut self, event: &DoorEvent) {
            *self = match event {
                DoorEvent::Opened => Door::Open,
                DoorEvent::Closed => Door::Closed,
            };
        }
    }
}

fn main() {
    assert_eq!(Door::TYPE, "door");
    assert_eq!(Door::SNAPSHOT_VERSION, 4);
    assert_eq!(Door::stream_id("front").unwrap().as_str(), "door-front");
    let mut door = Door::default();
    for event in Aggregate::handle(&door, vec![false, true]).unwrap() {
        Aggregate::apply(&mut door, &event);
    }
    assert_eq!(door, Door::Open);
    assert!(Aggregate::handle(&door, vec![]).is_err());
}
