@problemName bad
@univariate false
@dimensions 2
@equalLength false
@data
1.0,2.0,3.0:0.5,0.6,0.7:a
