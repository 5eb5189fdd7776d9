"""RL with the T1 recipe: pure tensor math (algos), anchor, rewards, the loop."""
