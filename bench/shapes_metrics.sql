-- shapes.sh shape 7, the 9th session: mq.metrics of the queue being consumed, then a 1 s pause.
SELECT * FROM mq.metrics('bench');
\sleep 1 s
