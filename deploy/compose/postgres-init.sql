-- One database per Canton node, owned by the role the nodes and agents use.
CREATE DATABASE sequencer1;
CREATE DATABASE mediator1;
CREATE DATABASE participant1;
CREATE DATABASE participant2;
CREATE DATABASE participant3;
