//! An aggregate declared inside a function body.
use annals::testing::given;
use annals::Event;

#[derive(Event, Debug, PartialEq)]
enum LampEvent {
    SwitchedOn,
}

#[derive(Debug, PartialEq, thiserror::Error)]
#[error("already on")]
struct AlreadyOn;

fn main() {
    #[derive(annals::Aggregate, Default)]
    #[aggregate(command = (), event = LampEvent, error = AlreadyOn)]
    struct Lamp {
        on: bool,
    }

    impl Lamp {
        fn handle(&self, _: ()) -> Result<Vec<LampEvent>, AlreadyOn> {
            if self.on {
                Err(AlreadyOn)
            } else {
                Ok(vec![LampEvent::SwitchedOn])
            }
        }

        fn apply(&mut self, _: &LampEvent) {
            self.on = true;
        }
    }

    given::<Lamp>([]).when(()).then([LampEvent::SwitchedOn]);
    given::<Lamp>([LampEvent::SwitchedOn]).when(()).then_error(AlreadyOn);
    assert_eq!(<Lamp as annals::Aggregate>::TYPE, "lamp");
}
