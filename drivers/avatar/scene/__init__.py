"""What sits around the head: framing (where the head goes in a frame of any size), background sources, the
torso plate, and compositing them under the head (`avatar.SceneAvatar`)."""
